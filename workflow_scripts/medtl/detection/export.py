"""Prepared detection store -> the YOLO-format folder Ultralytics trains on.

  images/{train,val,test}/{index:06d}.png   the store's images (file name = store row)
  labels/{train,val,test}/{index:06d}.txt   one ``class xc yc w h`` line per box, fractions of the image
  data.yaml                                 absolute ``path``, the three splits, class names
  labels/{split}.cache                      Ultralytics' label caches, built here once

The caches are built by this one job because Ultralytics writes a missing cache straight into
place: training jobs starting together on the same folder would otherwise overwrite each
other's half-written cache. Everything but the caches is written into a temp folder first and
renamed, so a killed export leaves no folder that looks complete.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from medtl.data.dense_store import DenseStore, load_dense_store
from medtl.data.store import SPLITS
from medtl.io import atomic_folder

DATA_YAML = "data.yaml"


def image_name(index: int) -> str:
    return f"{int(index):06d}"


def index_of(path: str | os.PathLike) -> int:
    """Store row of an exported image file."""
    return int(Path(path).stem)


def yolo_lines(store: DenseStore, index: int) -> list[str]:
    boxes, ids = store.boxes_of(index)
    s = float(store.size)
    lines = []
    for (x1, y1, x2, y2), c in zip(boxes, ids):
        lines.append(f"{c} {(x1 + x2) / 2 / s:.6f} {(y1 + y2) / 2 / s:.6f} {(x2 - x1) / s:.6f} {(y2 - y1) / s:.6f}")
    return lines


def export_yolo(store_dir: str | os.PathLike, out_dir: str | os.PathLike, build_caches: bool = True) -> Path:
    store = load_dense_store(store_dir, task="detection")
    out = Path(out_dir).resolve()
    with atomic_folder(out) as tmp:
        for split in SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for index in store.indices(split):
                img = np.asarray(store.images[index])
                Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(
                    tmp / "images" / split / f"{image_name(index)}.png")
                lines = yolo_lines(store, index)
                (tmp / "labels" / split / f"{image_name(index)}.txt").write_text("".join(f"{x}\n" for x in lines))
        data = {"path": str(out), "train": "images/train", "val": "images/val", "test": "images/test",
                "nc": len(store.classes), "names": dict(enumerate(store.classes)),
                "channels": 3}  # Ultralytics reads grayscale PNGs as 3 equal channels
        (tmp / DATA_YAML).write_text(yaml.safe_dump(data, sort_keys=False))
    if build_caches:
        build_label_caches(out / DATA_YAML)
    print(f"[export] {store.meta['name']}: {store.meta['counts']} images, {store.meta.get('box_counts')} boxes -> "
          f"{out}", file=sys.stderr, flush=True)
    return out


def build_label_caches(data_yaml: Path) -> None:
    """Scan every split once with Ultralytics' own dataset class (needs :func:`offline.prepare`)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(data_yaml))
    cfg = get_cfg()
    for split in SPLITS:
        build_yolo_dataset(cfg, data[split], batch=1, data=data, mode="val")
