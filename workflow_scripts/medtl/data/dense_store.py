"""The prepared dense store: the classification store's layout plus boxes or masks.

A store is a folder with
  images.npy   uint8 (N, S, S, C), C = 1 or 3, letterboxed to a square of side S
  labels.csv   one row per image: ``index`` (row in images.npy), ``split``, ``group``,
               ``image_id``, then one 0/1 column per class: for detection "has at least one
               box of this class", for segmentation "this structure is annotated"
  meta.json    name, type, task (detection / segmentation), classes, size, channels, counts
and, by task,
  boxes.csv    detection: ``index``, ``class`` (a name of meta classes), x1, y1, x2, y2 in
               pixels of the prepared image (0 <= x1 < x2 <= S)
  masks.npy    segmentation: uint8 (N, K, S, S) of 0/1, one mask per structure (K = classes);
               all zeros where the structure is not annotated

Like ``write_store``, a store is built in a sibling temp folder and renamed into place, so a
killed prepare job never leaves something that loads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from medtl.data.dense_registry import BOX_COLUMNS, DENSE_TASKS, DETECTION, SEGMENTATION
from medtl.data.store import IMAGES, LABELS, META, SPLITS, StoreError
from medtl.io import atomic_folder, read_json, write_json

BOXES, MASKS = "boxes.csv", "masks.npy"
TASK_FILE = {DETECTION: BOXES, SEGMENTATION: MASKS}


@dataclass
class DenseStore:
    root: Path
    images: np.ndarray             # memory-mapped uint8 (N, S, S, C)
    labels: pd.DataFrame
    meta: dict
    boxes: pd.DataFrame | None = None   # detection
    masks: np.ndarray | None = None     # segmentation, memory-mapped uint8 (N, K, S, S)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    def indices(self, split: str) -> np.ndarray:
        return self.labels.loc[self.labels["split"] == split, "index"].to_numpy()

    def image_id(self, index: int) -> str:
        return str(self.labels.set_index("index").at[int(index), "image_id"])

    def boxes_of(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 4) float boxes and (n,) class ids of one image."""
        rows = self.boxes[self.boxes["index"] == int(index)]
        ids = rows["class"].map({c: i for i, c in enumerate(self.classes)}).to_numpy(dtype=np.int64)
        return rows[list(BOX_COLUMNS)].to_numpy(dtype=np.float64), ids


def load_dense_store(root: str | os.PathLike, task: str | None = None) -> DenseStore:
    root = Path(root)
    if not (root / META).exists():
        raise StoreError(f"{root / META}: prepared store is incomplete; rerun its prepare job")
    meta = read_json(root / META)
    kind = meta.get("task")
    if kind not in DENSE_TASKS:
        raise StoreError(f"{root}: not a dense store (task {kind!r}; expected one of {DENSE_TASKS})")
    if task is not None and kind != task:
        raise StoreError(f"{root}: a {kind} store, but a {task} store is needed")
    for name in (IMAGES, LABELS, TASK_FILE[kind]):
        if not (root / name).exists():
            raise StoreError(f"{root / name}: prepared store is incomplete; rerun its prepare job")
    images = np.load(root / IMAGES, mmap_mode="r")
    labels = pd.read_csv(root / LABELS, dtype={"group": str, "image_id": str}, keep_default_na=False)
    boxes = masks = None
    if kind == DETECTION:
        boxes = pd.read_csv(root / BOXES, dtype={"class": str}, keep_default_na=False)
    else:
        masks = np.load(root / MASKS, mmap_mode="r")
    validate_dense(images, labels, meta, boxes, masks, where=str(root))
    return DenseStore(root, images, labels, meta, boxes, masks)


def validate_dense(images: np.ndarray, labels: pd.DataFrame, meta: dict, boxes: pd.DataFrame | None,
                   masks: np.ndarray | None, where: str) -> None:
    task = meta.get("task")
    if task not in DENSE_TASKS:
        raise StoreError(f"{where}: task must be one of {DENSE_TASKS}, got {task!r}")
    classes = meta.get("classes") or []
    if not classes:
        raise StoreError(f"{where}: meta lists no classes")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) \
            or images.shape[1] != images.shape[2]:
        raise StoreError(f"{where}: images must be uint8 (N, S, S, 1 or 3), got {images.dtype} {images.shape}")
    n, size = len(images), images.shape[1]
    missing = [c for c in ["index", "split", "group", "image_id", *classes] if c not in labels.columns]
    if missing:
        raise StoreError(f"{where}: labels table lacks columns {missing}")
    bad_split = sorted(set(labels["split"]) - set(SPLITS))
    if bad_split:
        raise StoreError(f"{where}: unknown split names {bad_split}; use {SPLITS}")
    if len(labels) and (labels["index"].max() >= n or labels["index"].min() < 0):
        raise StoreError(f"{where}: labels index out of range for {n} images")
    if not np.isin(labels[classes].to_numpy(), (0, 1)).all():
        raise StoreError(f"{where}: class columns must hold 0 or 1")
    if task == DETECTION:
        if boxes is None:
            raise StoreError(f"{where}: a detection store needs {BOXES}")
        lacking = [c for c in ("index", "class", *BOX_COLUMNS) if c not in boxes.columns]
        if lacking:
            raise StoreError(f"{where}: {BOXES} lacks columns {lacking}")
        if len(boxes):
            unknown = sorted(set(boxes["class"]) - set(classes))
            if unknown:
                raise StoreError(f"{where}: {BOXES} has classes {unknown} outside {classes}")
            if boxes["index"].min() < 0 or boxes["index"].max() >= n:
                raise StoreError(f"{where}: {BOXES} index out of range for {n} images")
            xy = boxes[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)
            ok = (xy >= 0).all(axis=1) & (xy <= size).all(axis=1) & (xy[:, 0] < xy[:, 2]) & (xy[:, 1] < xy[:, 3])
            if not ok.all():
                raise StoreError(f"{where}: {int((~ok).sum())} boxes are empty or outside the {size} px image, "
                                 f"e.g. {boxes[~ok].iloc[0].to_dict()}")
    else:
        if masks is None:
            raise StoreError(f"{where}: a segmentation store needs {MASKS}")
        if masks.dtype != np.uint8 or masks.shape != (n, len(classes), size, size):
            raise StoreError(f"{where}: masks must be uint8 {(n, len(classes), size, size)}, "
                             f"got {masks.dtype} {masks.shape}")


def write_dense_store(root: str | os.PathLike, task: str, n: int, size: int, channels: int,
                      fill: Callable[[np.ndarray, np.ndarray | None], None], labels: pd.DataFrame, meta: dict,
                      boxes: pd.DataFrame | None = None) -> DenseStore:
    """Write a dense store atomically.

    ``fill(images, masks)`` fills the writable memmaps in place (``masks`` is None for
    detection), so a large source never sits in memory; ``boxes`` is the detection table.
    """
    root = Path(root)
    classes = list(meta["classes"])
    with atomic_folder(root) as tmp:
        images = np.lib.format.open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint8, shape=(n, size, size, channels))
        masks = None
        if task == SEGMENTATION:
            masks = np.lib.format.open_memmap(tmp / MASKS, mode="w+", dtype=np.uint8,
                                              shape=(n, len(classes), size, size))
        fill(images, masks)
        for arr in (images, masks):
            if arr is not None:
                arr.flush()
        del images, masks
        labels = labels.reset_index(drop=True)
        meta = dict(meta, task=task, channels=channels, size=size,
                    counts={s: int((labels["split"] == s).sum()) for s in SPLITS})
        if task == DETECTION:
            boxes = (boxes if boxes is not None else pd.DataFrame(columns=["index", "class", *BOX_COLUMNS]))
            boxes = boxes[["index", "class", *BOX_COLUMNS]].reset_index(drop=True)
            meta["box_counts"] = {c: int((boxes["class"] == c).sum()) for c in classes}
            boxes.to_csv(tmp / BOXES, index=False)
        validate_dense(np.load(tmp / IMAGES, mmap_mode="r"), labels, meta, boxes,
                       np.load(tmp / MASKS, mmap_mode="r") if task == SEGMENTATION else None, where=str(root))
        labels.to_csv(tmp / LABELS, index=False)
        write_json(tmp / META, meta)
    return load_dense_store(root)
