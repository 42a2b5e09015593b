"""The prepared store: every dataset, whatever its source, ends up in this format.

A store is a folder with
  images.npy   uint8 array (N, H, W, C), C = 1 (grayscale) or 3 (RGB), already
               resized and centre-cropped, memory-mapped by training
  labels.csv   one row per image: ``index`` (row in images.npy), ``split``
               (train / val / test), ``group`` (patient or study id, may be empty),
               ``image_id`` (where it came from), then one 0/1 column per class
  meta.json    name, task (binary / multiclass / multilabel), classes, metrics,
               primary_metric, channels, size and split counts

Training never decodes an image file: the decode/resize/crop cost is paid once, when the store is
written (image files are read by :mod:`medtl.data.imageio`).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from medtl.io import atomic_folder, read_json, write_json

TASKS = ("binary", "multiclass", "multilabel")
SPLITS = ("train", "val", "test")
IMAGES, LABELS, META = "images.npy", "labels.csv", "meta.json"


class StoreError(ValueError):
    pass


@dataclass
class Store:
    root: Path
    images: np.ndarray  # memory-mapped uint8 (N, H, W, C)
    labels: pd.DataFrame
    meta: dict

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def task(self) -> str:
        return self.meta["task"]

    def indices(self, split: str) -> np.ndarray:
        return self.labels.loc[self.labels["split"] == split, "index"].to_numpy()

    def targets(self, split: str) -> np.ndarray:
        """(n, n_classes) 0/1 matrix, in the order of :meth:`indices`."""
        rows = self.labels[self.labels["split"] == split]
        return rows[self.classes].to_numpy(dtype=np.float32)


def load_store(root: str | os.PathLike) -> Store:
    root = Path(root)
    for name in (IMAGES, LABELS, META):
        if not (root / name).exists():
            raise StoreError(f"{root / name}: prepared store is incomplete; rerun its prepare job")
    meta = read_json(root / META)
    images = np.load(root / IMAGES, mmap_mode="r")
    labels = pd.read_csv(root / LABELS, dtype={"group": str, "image_id": str}, keep_default_na=False)
    validate(images, labels, meta, where=str(root))
    return Store(root, images, labels, meta)


def validate(images: np.ndarray, labels: pd.DataFrame, meta: dict, where: str) -> None:
    if meta.get("task") not in TASKS:
        raise StoreError(f"{where}: task must be one of {TASKS}, got {meta.get('task')!r}")
    classes = meta.get("classes") or []
    missing = [c for c in ["index", "split", *classes] if c not in labels.columns]
    if missing:
        raise StoreError(f"{where}: labels table lacks columns {missing}")
    bad_split = sorted(set(labels["split"]) - set(SPLITS))
    if bad_split:
        raise StoreError(f"{where}: unknown split names {bad_split}; use {SPLITS}")
    values = labels[classes].to_numpy()
    if not np.isin(values, (0, 1)).all():
        raise StoreError(f"{where}: class columns must hold 0 or 1")
    if meta["task"] != "multilabel" and not (values.sum(axis=1) == 1).all():
        raise StoreError(f"{where}: a {meta['task']} dataset needs exactly one class per image")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise StoreError(f"{where}: images must be uint8 (N, H, W, 1 or 3), got {images.dtype} {images.shape}")
    if labels["index"].max() >= len(images) or labels["index"].min() < 0:
        raise StoreError(f"{where}: labels index out of range for {len(images)} images")


def write_store(
    root: str | os.PathLike,
    n: int,
    size: tuple[int, int],
    channels: int,
    fill: Callable[[np.ndarray], None],
    labels: pd.DataFrame,
    meta: dict,
) -> Store:
    """Write a store atomically: build it in a sibling temp folder, then rename.

    ``fill`` receives the writable (n, H, W, C) memmap and fills it in place, so
    datasets larger than memory never sit in RAM.
    """
    with atomic_folder(root) as tmp:
        arr = np.lib.format.open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint8, shape=(n, *size, channels))
        fill(arr)
        arr.flush()
        del arr
        labels = labels.reset_index(drop=True)
        meta = dict(meta, channels=channels, size=list(size),
                    counts={s: int((labels["split"] == s).sum()) for s in SPLITS})
        validate(np.load(tmp / IMAGES, mmap_mode="r"), labels, meta, where=str(root))
        labels.to_csv(tmp / LABELS, index=False)
        write_json(tmp / META, meta)
    return load_store(root)


def progress(label: str, total: int, what: str = "decoded") -> Callable[[int], None]:
    """``tick(done)``: a log line at every tenth of ``total`` (and at the end), with the time so far and
    the time left at this pace, so that a long step can be followed in its log."""
    start, step = time.monotonic(), max(1, total // 10)

    def tick(done: int) -> None:
        if done % step == 0 or done == total:
            spent = time.monotonic() - start
            left = spent / done * (total - done) if done else 0.0
            print(f"[prepare] {label}: {done}/{total} {what} ({spent:.1f} s, about {left:.0f} s left)",
                  file=sys.stderr, flush=True)

    return tick


