"""Boxes of the detection sources (VinDr-CXR, TBX11K, NIH ChestX-ray14): from each source's
pixel corners to the dense registry's :class:`DenseRaw`, and the fusion of the boxes that
several readers (radiologists) drew on one image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from medtl.data.adapters import LabelFileError
from medtl.data.dense_adapters import _subset
from medtl.data.dense_registry import BOX_COLUMNS, DETECTION, DenseRaw

IMAGE_COLUMNS = ("image", "image_id", "split", "group", "width", "height")


def subset(images: pd.DataFrame, limit) -> pd.DataFrame:
    """A stable subset of ``limit`` images (all when unset), the same rule as the dense adapters'."""
    images = images.reset_index(drop=True)
    return images.iloc[_subset(list(images["image_id"].astype(str)), limit)].reset_index(drop=True)


def box_raw(images: pd.DataFrame, boxes: pd.DataFrame, classes: Sequence[str], where: str,
            channels: int = 1) -> DenseRaw:
    """``images``: one row per image with ``image`` (file), ``image_id``, ``split``, ``group`` and the
    ``width`` and ``height`` of the space its box coordinates are in. ``boxes``: ``image_id``,
    ``class`` and pixel corners x1, y1, x2, y2; boxes of other images are ignored, boxes are
    clipped to their image, and an image without boxes stays as a negative."""
    missing = [c for c in IMAGE_COLUMNS if c not in images.columns]
    if missing:
        raise ValueError(f"{where}: image table lacks {missing}")
    images = images.reset_index(drop=True)
    unknown = sorted(set(boxes["class"]) - set(classes))
    if unknown:
        raise LabelFileError(f"{where}: box classes {unknown} outside {list(classes)}")
    xy = boxes[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(xy).all(axis=1) | (xy[:, 2] < xy[:, 0]) | (xy[:, 3] < xy[:, 1])
    if bad.any():
        row = boxes[bad].iloc[0]
        raise LabelFileError(f"{where}: invalid box on image '{row['image_id']}' "
                             f"({row['x1']}, {row['y1']}, {row['x2']}, {row['y2']}): need x1 <= x2 and y1 <= y2")
    row_of = pd.Series(np.arange(len(images)), index=images["image_id"].astype(str))
    boxes = boxes[boxes["image_id"].astype(str).isin(row_of.index)]
    rows = row_of.loc[boxes["image_id"].astype(str)].to_numpy()
    size = images[["width", "height", "width", "height"]].to_numpy(dtype=np.float64)[rows]
    fractions = np.clip(boxes[list(BOX_COLUMNS)].to_numpy(dtype=np.float64) / np.maximum(size, 1), 0.0, 1.0)
    out = pd.DataFrame(fractions, columns=list(BOX_COLUMNS))
    out.insert(0, "class", boxes["class"].astype(str).to_numpy())
    out.insert(0, "row", rows)
    table = pd.DataFrame({"split": images["split"].to_numpy(), "group": images["group"].astype(str).to_numpy(),
                          "image_id": images["image_id"].astype(str).to_numpy()})
    return DenseRaw(table=table, paths=[str(p) for p in images["image"]], classes=list(classes), task=DETECTION,
                    channels=channels, boxes=out.sort_values("row", kind="stable").reset_index(drop=True))


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_boxes_fusion(boxes: np.ndarray, readers: Sequence, iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the boxes (n, 4: x1, y1, x2, y2) that ``readers`` drew for one class on one image.

    Weighted boxes fusion (Solovyev, Wang & Gabruseva, Image Vis. Comput. 2021), as the
    ``ensemble-boxes`` package runs it, with every box at confidence 1: boxes are taken in order;
    each joins the cluster whose fused box it overlaps most, if that IoU is above ``iou_thr``,
    else starts a cluster; a cluster's fused box is the confidence-weighted mean of its boxes,
    here their plain mean. Returns the fused boxes and, for each, how many distinct readers
    drew a box of it (WBF's confidence rescaling, readers in cluster / readers of the image).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    members: list[list[int]] = []
    fused = np.empty((0, 4))
    for i, box in enumerate(boxes):
        ious = _iou(box, fused) if len(fused) else np.empty(0)
        best = int(np.argmax(ious)) if len(ious) else -1
        if best < 0 or ious[best] <= iou_thr:
            members.append([i])
            fused = np.vstack([fused, box])
        else:
            members[best].append(i)
            fused[best] = boxes[members[best]].mean(axis=0)
    counts = np.array([len({readers[i] for i in m}) for m in members], dtype=np.int64)
    return fused, counts


def fuse_readers(boxes: pd.DataFrame, iou_thr: float, min_readers: int = 1) -> pd.DataFrame:
    """Boxes of several readers (column ``reader``) -> one set per image and class, by
    :func:`weighted_boxes_fusion`; ``readers`` counts the readers behind each fused box, and fused
    boxes drawn by fewer than ``min_readers`` readers are dropped. Readers are taken in name order,
    each one's boxes in file order, so the result does not depend on how the file is sorted."""
    if boxes.empty:
        return boxes.assign(readers=pd.Series(dtype=np.int64)).drop(columns="reader")
    ordered = boxes.assign(_order=np.arange(len(boxes))).sort_values(["image_id", "class", "reader", "_order"],
                                                                      kind="stable")
    out = []
    for (image_id, cls), group in ordered.groupby(["image_id", "class"], sort=False):
        fused, counts = weighted_boxes_fusion(group[list(BOX_COLUMNS)].to_numpy(), list(group["reader"]), iou_thr)
        for box, n in zip(fused, counts):
            if n >= min_readers:
                out.append({"image_id": image_id, "class": cls, **dict(zip(BOX_COLUMNS, box)), "readers": int(n)})
    return pd.DataFrame(out, columns=["image_id", "class", *BOX_COLUMNS, "readers"])
