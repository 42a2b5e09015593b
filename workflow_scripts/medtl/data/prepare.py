"""Raw source -> prepared store, once per (dataset, resize, crop).

Every source's labels and splits pass one check, :func:`validate_labels`, before any image is decoded: bad
input stops here with the row and the value, rather than ending as a wrong or undefined metric.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from medtl.data.adapters import LabelFileError, rows_text
from medtl.data.imageio import fill_from_array, fill_from_files
from medtl.data.options import image_options
from medtl.data.registry import DATASETS, RawData
from medtl.data.store import SPLITS, TASKS, Store, StoreError, write_store
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


class LabelError(LabelFileError):
    """Labels or splits that would train or score wrongly: a stray label, a class missing from a split,
    one image listed twice."""


#: optional columns of a source's table, used for messages and dropped before the store is written:
#: ``source_row`` says where the user finds a row (``labels.csv line 7``), ``source_label`` holds the
#: label as written in a class-name column
SOURCE_COLUMNS = ("source_row", "source_label")
#: the split options a user can change, named in messages
SPLIT_ADVICE = ("change the split (the entry's 'split_seed' or 'val_fraction', the option 'test_fraction', "
                "or the split column of your label file), add images of the class, or merge it into another class")


def _where(table: pd.DataFrame, rows, classes: list[str] | None = None) -> list[str]:
    """How a user finds each of ``rows``: its line in the label file where the source says, and its image."""
    sub = table.loc[rows]
    text = "'" + sub["image_id"].astype(str) + "'"
    if "source_row" in sub.columns:
        text = sub["source_row"].astype(str) + " (" + text + ")"
    else:
        text = "image " + text
    if classes is not None:   # what the row says: its split and label
        if "source_label" in sub.columns:
            label = sub["source_label"].map(repr)
        else:
            label = sub[classes].apply(lambda r: "+".join(c for c in classes if r[c] == 1) or "no class", axis=1)
        text = text + ", " + sub["split"].astype(str) + ", " + label
    return text.tolist()


def validate_labels(dataset: str, table: pd.DataFrame, classes: list[str], task: str,
                    paths: list[str] | None = None) -> list[str]:
    """Check a source's table (``split``, ``group``, ``image_id``, one 0/1 column per class) after the
    validation split is carved, for every source alike. Raises :class:`LabelError` (labels, splits,
    duplicates) or :class:`StoreError` (an image file that is not there), naming rows and values; returns
    the warnings (multi-label classes with no positive in val or test, patients on two sides).

    - the task is known; a binary task has exactly two classes; a single-label image has exactly one
      class (a row with none holds a label outside ``classes``);
    - every split has images; in a binary or multi-class task every class has images in every split;
      in a multi-label task every class has a positive in train (val or test without one: a warning, the
      metrics then report that class as undefined);
    - no image file is listed twice, and every listed file exists.
    """
    name = f"dataset '{dataset}'"
    if task not in TASKS:
        raise LabelError(f"{name}: task must be one of {TASKS}, got {task!r}")
    if not classes or len(set(classes)) != len(classes):
        raise LabelError(f"{name}: needs distinct class names, got {list(classes)}")
    missing = [c for c in ["split", "image_id", *classes] if c not in table.columns]
    if missing:
        raise LabelError(f"{name}: the source's table lacks columns {missing}")
    values = table[classes].apply(pd.to_numeric, errors="coerce")
    bad = ~values.isin([0, 1]).all(axis=1)
    if bad.any():
        raise LabelError(f"{name}: class columns must hold 0 or 1; {int(bad.sum())} row(s) do not: "
                         + rows_text(_where(table, bad[bad].index, classes)))
    counts = values.sum(axis=1)
    single = task != "multilabel"

    # labels: the classes and the task agree, each image has one class
    if single and (counts == 0).any():
        rows = counts.index[counts == 0]
        raise LabelError(f"{name}: {len(rows)} row(s) have a label outside the classes {classes}: "
                         f"{rows_text(_where(table, rows, classes))}. Fix the value, or add it to the "
                         "dataset's option 'classes'")
    if single and (counts > 1).any():
        rows = counts.index[counts > 1]
        raise LabelError(f"{name}: a {task} image has exactly one class; {len(rows)} row(s) have several: "
                         f"{rows_text(_where(table, rows, classes))}. Keep one, or use task: multilabel")
    per_class = values.sum(axis=0).astype(int)
    if task == "binary" and len(classes) != 2:
        main = per_class.sort_values(ascending=False, kind="stable").index[:2]
        described = []
        for c in classes:
            n = int(per_class[c])
            text = f"{c!r} ({n} row{'s' if n != 1 else ''}"
            if c not in main:
                text += ": " + rows_text(_where(table, values.index[values[c] == 1]))
            described.append(text + ")")
        raise LabelError(f"{name}: task 'binary' needs exactly two classes; the labels hold {len(classes)}: "
                         f"{', '.join(described)}. Fix the stray values, or set the dataset's option "
                         "'classes' to the two classes (a value outside them is then refused with its row), "
                         "or set task: multiclass")
    if single and len(classes) < 2:
        raise LabelError(f"{name}: a {task} task needs at least two classes; the labels hold {classes}")

    # one row per image file
    keys = pd.Series([os.path.normpath(os.path.abspath(p)) for p in paths], index=table.index) \
        if paths is not None else None
    if keys is not None and keys.duplicated().any():
        twice = keys[keys.duplicated(keep=False)]
        pairs = []
        for path, rows in twice.groupby(twice, sort=False).groups.items():
            pairs.append(f"{path}: " + " and ".join(_where(table, rows, classes)))
        raise LabelError(f"{name}: {twice.nunique()} image file(s) are listed more than once (an image has one "
                         f"label and one split): {rows_text(pairs, 3)}. Remove the extra rows")

    # splits: all there, every class in each
    unknown = sorted(set(table["split"]) - set(SPLITS))
    if unknown:
        raise LabelError(f"{name}: unknown split names {unknown}; use {list(SPLITS)}")
    for split in SPLITS:
        if not (table["split"] == split).any():
            raise LabelError(f"{name}: no images in the {split} split after preparation")
    by_split = values.groupby(table["split"]).sum().reindex(list(SPLITS)).astype(int)
    sizes = table["split"].value_counts()
    warnings, absent = [], []
    for c in classes:
        where = ", ".join(f"{s} {by_split.at[s, c]}" for s in SPLITS)
        lacking = [s for s in SPLITS if by_split.at[s, c] == 0]
        if single and lacking or "train" in lacking:
            # fewer images than splits: more likely a stray label than an unlucky split, so say where they are
            rows = ""
            if per_class[c] < len(SPLITS):
                rows = ": " + rows_text(_where(table, values.index[values[c] == 1]))
            if single:
                absent.append(f"class {c!r} has no image in {' or '.join(lacking)} ({where}{rows})")
            else:
                absent.append(f"class {c!r} has no positive image in train (positives: {where}{rows})")
            continue
        for split in SPLITS if not single else ():
            positives = by_split.at[split, c]
            if 0 < positives < sizes[split]:
                continue
            kind = "positive" if positives == 0 else "negative"
            of = ", ".join(f"{s} {by_split.at[s, c]}/{sizes[s]}" for s in SPLITS)
            warnings.append(f"class {c!r} has no {kind} image in the {split} split (positives: {of}): its "
                            f"{split} AUROC and AP are undefined")
    if absent:
        what = ("its metrics there would be undefined (NaN)" if single
                else "the model cannot learn a class it never sees")
        raise LabelError(f"{name}: {rows_text(absent, 8)}. In a {task} task every class needs "
                         f"{'images in every split' if single else 'a positive in train'}, else {what}. "
                         f"To fix: {SPLIT_ADVICE}")
    if "group" in table.columns:
        groups = table.loc[table["group"].astype(str) != ""]
        sides = groups.groupby("group")["split"].nunique()
        if (sides > 1).any():
            crossing = sides.index[sides > 1]
            warnings.append(f"{len(crossing)} patient(s) have images in more than one split (e.g. "
                            f"{', '.join(map(repr, crossing[:5]))}): the test score is then optimistic; "
                            "check the split column")

    if paths is not None:
        lost = [pos for pos, p in enumerate(paths) if not os.path.isfile(p)]
        if lost:
            found = [w if paths[pos] in w else f"{w}: {paths[pos]}"
                     for w, pos in zip(_where(table, table.index[lost]), lost)]
            raise StoreError(f"{paths[lost[0]]}: image file is missing; {name} lists {len(lost)} file(s) that "
                             f"are not there: {rows_text(found)}. Fix the path, or remove the row")
    return warnings


def prepare(dataset: str, entry: dict, manifest_file: str, resize: int, crop: int, out_dir: str) -> Store:
    """``entry`` is the dataset's resolved config: type, options, metrics, primary_metric, val_fraction, seed."""
    spec = DATASETS.get(entry["type"])
    options = {**spec.options, **entry.get("options", {})}
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)   # as Snakemake does for the job's output
    raw: RawData = spec.read(read_json(manifest_file), options)
    table = carve_validation(raw.table, float(entry.get("val_fraction", 0.2)), int(entry.get("split_seed", 0)))
    for warning in validate_labels(dataset, table, raw.classes, raw.task, raw.paths):
        print(f"[prepare] {dataset}: warning: {warning}", file=sys.stderr, flush=True)
    table = table.drop(columns=[c for c in SOURCE_COLUMNS if c in table.columns and c not in raw.classes])
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
