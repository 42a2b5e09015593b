"""Raw dense source -> prepared dense store, once per (task, dataset, size).

Images are letterboxed (longer side resized to the store size, then padded with black to a
square) rather than centre-cropped as for classification: a crop would cut boxes and masks
at the border, and a plain resize would distort the anatomy of non-square radiographs.
Boxes go through the same scale and offset; masks are resized with the image and
re-thresholded, so they stay aligned pixel for pixel.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.dense_registry import BOX_COLUMNS, DENSE_DATASETS, DETECTION, DenseRaw, MaskArray
from medtl.data.dense_store import DenseStore, write_dense_store
from medtl.data.imageio import image_size, open_image, open_mask
from medtl.data.options import image_options
from medtl.data.prepare import carve_validation
from medtl.io import read_json


@dataclass(frozen=True)
class Letterbox:
    """Where a (width, height) source lands in the square of side ``size``."""
    scale: float
    pad_x: int
    pad_y: int
    width: int   # resized width, before padding
    height: int

    @classmethod
    def of(cls, width: int, height: int, size: int) -> "Letterbox":
        scale = size / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        return cls(scale, (size - w) // 2, (size - h) // 2, w, h)

    def boxes(self, fractions: np.ndarray) -> np.ndarray:
        """(n, 4) fractional x1, y1, x2, y2 of the source -> pixels of the prepared image."""
        xy = np.asarray(fractions, dtype=np.float64).reshape(-1, 4)
        out = np.empty_like(xy)
        out[:, [0, 2]] = xy[:, [0, 2]] * self.width + self.pad_x
        out[:, [1, 3]] = xy[:, [1, 3]] * self.height + self.pad_y
        return out


def letterbox_image(path: str, box: Letterbox, size: int, channels: int, intensity: str = "full_range",
                    background: int | str = "black") -> np.ndarray:
    """The image (:func:`medtl.data.imageio.open_image`) resized into ``box`` and padded with black to ``size``."""
    from PIL import Image

    img = open_image(path, "L" if channels == 1 else "RGB", intensity, background)
    img = img.resize((box.width, box.height), Image.BILINEAR)
    out = np.zeros((size, size, channels), np.uint8)
    arr = np.asarray(img, dtype=np.uint8)
    out[box.pad_y:box.pad_y + box.height, box.pad_x:box.pad_x + box.width] = arr[..., None] if channels == 1 else arr
    return out


def letterbox_mask(mask: str | MaskArray, box: Letterbox, size: int, source_size: tuple[int, int]) -> np.ndarray:
    """0/1 mask aligned with :func:`letterbox_image`; foreground is any non-zero pixel.
    ``mask`` is a mask file or a :class:`MaskArray`."""
    from PIL import Image

    if isinstance(mask, MaskArray):
        img = Image.fromarray((np.asarray(mask.array()) > 0).astype(np.uint8) * 255)
    else:
        img = open_mask(mask)
    if img.size != source_size:  # some sources store masks at another resolution than the image
        img = img.resize(source_size, Image.NEAREST)
    img = img.point(lambda v: 255 if v > 0 else 0)
    # bilinear then threshold at half: smoother edges than nearest at small sizes, same area
    arr = np.asarray(img.resize((box.width, box.height), Image.BILINEAR), dtype=np.uint8) >= 128
    out = np.zeros((size, size), np.uint8)
    out[box.pad_y:box.pad_y + box.height, box.pad_x:box.pad_x + box.width] = arr
    return out


def place_boxes(raw: DenseRaw, geometry: list[Letterbox], table_index: np.ndarray, size: int,
                min_side: float = 1.0) -> tuple[pd.DataFrame, int]:
    """Prepared-pixel boxes (``index`` = store row); boxes thinner than ``min_side`` px are dropped."""
    b = raw.boxes if raw.boxes is not None else pd.DataFrame(columns=["row", "class", *BOX_COLUMNS])
    rows = []
    for row, group in b.groupby("row", sort=True):
        row = int(row)
        xy = np.clip(geometry[row].boxes(group[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)), 0, size)
        for cls, (x1, y1, x2, y2) in zip(group["class"], xy):
            rows.append({"index": int(table_index[row]), "class": str(cls),
                         "x1": round(x1, 2), "y1": round(y1, 2), "x2": round(x2, 2), "y2": round(y2, 2)})
    out = pd.DataFrame(rows, columns=["index", "class", *BOX_COLUMNS])
    keep = ((out["x2"] - out["x1"]) >= min_side) & ((out["y2"] - out["y1"]) >= min_side)
    return out[keep].sort_values(["index", "class"], kind="stable").reset_index(drop=True), int((~keep).sum())


def prepare_dense(dataset: str, task: str, entry: dict, manifest_file: str, size: int, out_dir: str) -> DenseStore:
    """``entry``: the dataset's resolved config (type, options, val_fraction, split_seed)."""
    spec = DENSE_DATASETS.get(entry["type"])
    options = {**spec.options, **entry.get("options", {})}
    read = image_options(options)
    raw = spec.reader(task, entry["type"])(read_json(manifest_file), options)
    if raw.task != task:
        raise ValueError(f"dataset '{dataset}': its {task} reader returned {raw.task} data")
    table = carve_validation(raw.table, float(entry.get("val_fraction", 0.2)), int(entry.get("split_seed", 0)))
    for split in ("train", "val", "test"):
        if not (table["split"] == split).any():
            raise ValueError(f"dataset '{dataset}': no images in the {split} split after preparation")
    # store rows follow the table's order; raw rows keep their position for boxes and masks
    order = np.arange(len(table))
    sizes = [image_size(p) for p in raw.paths]
    geometry = [Letterbox.of(w, h, size) for w, h in sizes]
    labels = pd.DataFrame({"index": order, "split": table["split"].to_numpy(),
                           "group": table["group"].astype(str).to_numpy(),
                           "image_id": table["image_id"].astype(str).to_numpy()})
    boxes = None
    if task == DETECTION:
        boxes, dropped = place_boxes(raw, geometry, order, size)
        if dropped:
            print(f"[prepare] {dataset}: dropped {dropped} boxes thinner than 1 px at {size} px",
                  file=sys.stderr, flush=True)
        for c in raw.classes:
            labels[c] = labels["index"].isin(boxes.loc[boxes["class"] == c, "index"]).astype(int)
    else:
        for k, c in enumerate(raw.classes):
            labels[c] = [int(m[k] is not None) for m in raw.masks]

    def fill(images: np.ndarray, masks: np.ndarray | None) -> None:
        start, step = time.monotonic(), max(1, len(raw.paths) // 10)
        for i, path in enumerate(raw.paths):
            images[i] = letterbox_image(path, geometry[i], size, raw.channels, **read)
            if masks is not None:
                for k, mask_path in enumerate(raw.masks[i]):
                    masks[i, k] = 0 if mask_path is None else letterbox_mask(mask_path, geometry[i], size, sizes[i])
            if (i + 1) % step == 0 or i + 1 == len(raw.paths):
                print(f"[prepare] {dataset}: {i + 1}/{len(raw.paths)} decoded ({time.monotonic() - start:.1f} s)",
                      file=sys.stderr, flush=True)

    meta = {"name": dataset, "type": entry["type"], "classes": list(raw.classes),
            "preprocess": {"size": size, "mode": "letterbox"}}
    store = write_dense_store(out_dir, task, len(table), size, raw.channels, fill, labels, meta, boxes)
    extra = f", boxes {store.meta['box_counts']}" if task == DETECTION else ""
    print(f"[prepare] {dataset} ({task}): {store.meta['counts']}{extra} -> {Path(out_dir)}", file=sys.stderr,
          flush=True)
    return store
