"""Every classification job's per-image predictions, kept beside its metrics.json.

``predictions.parquet`` has one row per validation and test image:

  split          ``val`` or ``test``
  index          the image's row in the prepared store's ``images.npy``
  image_id       where the image came from (the store's ``image_id``; the index when the store has none)
  group          patient or study id ("" when the dataset has none)
  target.<class> 0/1, one column per class, in the store's class order
  score.<class>  the predicted probability (softmax for binary/multi-class, sigmoid for multi-label)

The file's metadata (key ``medtl``) holds the task and the class order, so a reader needs no store.
The reports resample these rows for confidence intervals and paired tests
(:mod:`medtl.report.significance`) instead of recomputing any prediction.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.io import atomic_path

FILE = "predictions.parquet"
META_KEY = b"medtl"
TARGET, SCORE = "target.", "score."


@dataclass
class Predictions:
    task: str
    classes: list[str]
    frame: pd.DataFrame  # the file's rows, columns as in the module docstring

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[[TARGET + c for c in self.classes]].to_numpy(dtype=np.int64)

    def scores(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[[SCORE + c for c in self.classes]].to_numpy(dtype=np.float64)


def predictions_frame(store, split: str, probs: np.ndarray) -> pd.DataFrame:
    """The rows of one split: ``probs`` in the order of ``store.indices(split)``."""
    rows = store.labels[store.labels["split"] == split]
    probs = np.asarray(probs)
    if probs.shape != (len(rows), len(store.classes)):
        raise ValueError(f"{split}: {probs.shape} probabilities for {len(rows)} images x {len(store.classes)} classes")
    index = rows["index"].to_numpy(dtype=np.int64)
    out = pd.DataFrame({
        "split": split,
        "index": index,
        "image_id": rows["image_id"].astype(str).to_numpy() if "image_id" in rows else index.astype(str),
        "group": rows["group"].fillna("").astype(str).to_numpy() if "group" in rows else "",
    })
    dtype = np.float32 if probs.dtype == np.float32 else np.float64  # as predicted: no new ties
    for c in store.classes:
        out[TARGET + c] = rows[c].to_numpy(dtype=np.uint8)
    for i, c in enumerate(store.classes):
        out[SCORE + c] = probs[:, i].astype(dtype)
    return out


def write_predictions(path: str | os.PathLike, store, probs: dict[str, np.ndarray]) -> None:
    """Write ``{split: probabilities}`` atomically (a killed job leaves no file that looks complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.concat([predictions_frame(store, split, p) for split, p in probs.items()], ignore_index=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {**(table.schema.metadata or {}),
            META_KEY: json.dumps({"task": store.task, "classes": store.classes}).encode()}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")


def read_predictions(path: str | os.PathLike) -> Predictions:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file is missing (rerun its training job)")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path}: not a medtl predictions file (no '{META_KEY.decode()}' metadata)")
    meta = json.loads(raw)
    frame = table.to_pandas()
    missing = [c for c in ["split", "index", "image_id", "group", *(TARGET + k for k in meta["classes"]),
                           *(SCORE + k for k in meta["classes"])] if c not in frame]
    if missing:
        raise ValueError(f"{path}: lacks columns {missing}")
    return Predictions(task=meta["task"], classes=list(meta["classes"]), frame=frame)


def predictions_path(metrics_file: str | os.PathLike) -> Path:
    """The predictions file written beside a job's metrics.json."""
    return Path(metrics_file).with_name(FILE)
