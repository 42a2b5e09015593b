"""Raw source -> prepared store, once per (dataset, resize, crop)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from medtl.data.imageio import fill_from_files
from medtl.data.options import image_options
from medtl.data.registry import DATASETS, RawData
from medtl.data.store import Store, fill_from_array, write_store
from medtl.io import read_json


def carve_validation(table: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Move ``fraction`` of the training rows to ``val``, whole patients at a time when ids exist."""
    table = table.copy()
    if (table["split"] == "val").any() or fraction <= 0:
        return table
    train = table.index[table["split"] == "train"]
    groups = table.loc[train, "group"].astype(str)
    groups = groups.where(groups != "", pd.Series(train.astype(str), index=train))  # no id: each image alone
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, val = next(splitter.split(np.zeros(len(train)), groups=groups.to_numpy()))
    table.loc[train[val], "split"] = "val"
    return table


def prepare(dataset: str, entry: dict, manifest_file: str, resize: int, crop: int, out_dir: str) -> Store:
    """``entry`` is the dataset's resolved config: type, options, metrics, primary_metric, val_fraction, seed."""
    spec = DATASETS.get(entry["type"])
    options = {**spec.options, **entry.get("options", {})}
    raw: RawData = spec.read(read_json(manifest_file), options)
    table = carve_validation(raw.table, float(entry.get("val_fraction", 0.2)), int(entry.get("split_seed", 0)))
    for split in ("train", "val", "test"):
        if not (table["split"] == split).any():
            raise ValueError(f"dataset '{dataset}': no images in the {split} split after preparation")
    table.insert(0, "index", np.arange(len(table)))
    if raw.paths is not None:
        fill = fill_from_files(raw.paths, resize, crop, raw.channels, label=dataset, **image_options(options))
        channels = raw.channels
    else:
        fill = fill_from_array(raw.array, resize, crop, label=dataset)
        channels = 1 if raw.array.ndim == 3 or raw.array.shape[-1] == 1 else 3
    meta = {
        "name": dataset, "type": entry["type"], "task": raw.task, "classes": raw.classes,
        "metrics": list(entry.get("metrics") or spec.metrics),
        "primary_metric": entry.get("primary_metric") or spec.primary_metric,
        "preprocess": {"resize": resize, "crop": crop},
    }
    store = write_store(out_dir, len(table), (crop, crop), channels, fill, table, meta)
    counts = store.meta["counts"]
    print(f"[prepare] {dataset}: {counts} -> {Path(out_dir)}", file=sys.stderr, flush=True)
    return store
