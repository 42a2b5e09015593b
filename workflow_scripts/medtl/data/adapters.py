"""Generic, code-free adapters for data users bring: a CSV of image paths with label
columns, and a folder of images per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.options import TEST_FRACTION
from medtl.data.registry import DATASETS, DatasetSpec, RawData
from medtl.settings import Choice, Settings, Text, TextList

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class LabelFileError(ValueError):
    pass


def _require(options: dict, key: str, dataset_type: str):
    if key not in options:
        raise ValueError(f"dataset type '{dataset_type}' needs option '{key}' in its config entry")
    return options[key]


def existing_root(options: dict, dataset_type: str) -> dict:
    root = Path(_require(options, "root", dataset_type)).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist; set 'root' in the dataset's config entry")
    return {"root": str(root)}


def read_csv_table(manifest: dict, options: dict) -> RawData:
    root = Path(manifest["root"])
    csv = root / options.get("csv", "labels.csv")
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise LabelFileError(f"{csv}: label file is missing") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LabelFileError(f"{csv}: malformed label file ({err})") from None
    path_col = options.get("path_column", "path")
    split_col = options.get("split_column", "split")
    group_col = options.get("group_column", "group")
    label_cols = options.get("label_columns")
    task = options.get("task", "multilabel")
    for col in [path_col] + (label_cols or []):
        if col not in table.columns:
            raise LabelFileError(f"{csv}: column '{col}' is missing; columns are {list(table.columns)}")
    if not label_cols:
        label_cols = [c for c in table.columns if c not in {path_col, split_col, group_col}]
    if task != "multilabel" and len(label_cols) == 1:
        # one column holding the class name per row
        col = label_cols[0]
        classes = options.get("classes") or sorted(table[col].unique())
        unknown = sorted(set(table[col]) - set(classes))
        if unknown:
            raise LabelFileError(f"{csv}: column '{col}' has labels {unknown} outside classes {classes}")
        onehot = pd.DataFrame({c: (table[col] == c).astype(int) for c in classes})
    else:
        classes = list(label_cols)
        try:
            onehot = table[classes].apply(pd.to_numeric, errors="raise").astype(float)
        except ValueError as err:
            raise LabelFileError(f"{csv}: label columns {classes} must hold 0 or 1 ({err})") from None
        if not onehot.isin([0, 1]).all().all():
            bad = onehot.columns[~onehot.isin([0, 1]).all()].tolist()
            raise LabelFileError(f"{csv}: label columns {bad} hold values other than 0 and 1")
        onehot = onehot.astype(int)
    group = table[group_col].astype(str).str.strip() if group_col in table.columns else pd.Series("", index=table.index)
    if split_col in table.columns:
        split = table[split_col].str.strip().str.lower().replace({"valid": "val", "validation": "val"})
    else:
        # whole patients to one side: the hash is of the group id where there is one, of the file otherwise
        key = group.where(group != "", "path:" + table[path_col].astype(str))
        split = pd.Series(np.where(_hash_fraction(key) < float(options.get("test_fraction", 0.2)),
                                   "test", "train"), index=table.index)
    out = pd.DataFrame({"split": split, "group": group, "image_id": table[path_col]})
    out = pd.concat([out, onehot], axis=1)
    paths = [str((root / p).resolve()) for p in table[path_col]]
    return RawData(out, classes, task, int(options.get("channels", 3)), paths=paths)


def _hash_fraction(keys: pd.Series) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per key: the same file always lands in the same split."""
    return pd.util.hash_pandas_object(keys.astype(str), index=False).to_numpy() % 10_000 / 10_000


def read_image_folder(manifest: dict, options: dict) -> RawData:
    root = Path(manifest["root"])
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise LabelFileError(f"{root}: expected one sub-folder per class, found none")
    rows = []
    for d in class_dirs:
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                rows.append({"path": str(f.relative_to(root)), "label": d.name})
    if not rows:
        raise LabelFileError(f"{root}: no image files ({sorted(IMAGE_SUFFIXES)}) in its class folders")
    table = pd.DataFrame(rows)
    classes = [d.name for d in class_dirs]
    onehot = pd.DataFrame({c: (table["label"] == c).astype(int) for c in classes})
    task = "binary" if len(classes) == 2 else "multiclass"
    split = np.where(_hash_fraction(table["path"]) < float(options.get("test_fraction", 0.2)), "test", "train")
    out = pd.concat([pd.DataFrame({"split": split, "group": "", "image_id": table["path"]}), onehot], axis=1)
    return RawData(out, classes, task, int(options.get("channels", 3)),
                   paths=[str(root / p) for p in table["path"]])


ROOT = Text(doc="the dataset's folder")
CHANNELS = Choice(3, choices=(1, 3), doc="channels of the stored images (1: grayscale)")

DATASETS.register("csv_table")(DatasetSpec(
    fetch=lambda raw, opts: existing_root(opts, "csv_table"), read=read_csv_table,
    metrics=("auroc", "map", "accuracy", "macro_f1"), primary_metric="auroc",
    description="Your own data: a CSV of image paths (relative to root) and label columns.",
    options=Settings(
        root=ROOT,
        csv=Text("labels.csv", doc="the label file, relative to root"),
        path_column=Text("path", doc="column of image paths, relative to root"),
        label_columns=TextList(None, nullable=True, doc="0/1 label columns (multilabel), or one column of class "
                                                        "names; null: every other column"),
        task=Choice("multilabel", choices=("multilabel", "multiclass", "binary"), doc="the classification task"),
        classes=TextList(None, nullable=True, doc="class names of a class-name column, in order"),
        group_column=Text("group", doc="column of patient ids (a patient stays in one split)"),
        split_column=Text("split", doc="column of train/val/test; absent: the test split is drawn by patient"),
        test_fraction=TEST_FRACTION,
        channels=CHANNELS,
    )))

DATASETS.register("image_folder")(DatasetSpec(
    fetch=lambda raw, opts: existing_root(opts, "image_folder"), read=read_image_folder,
    metrics=("accuracy", "auroc", "kappa", "macro_f1"), primary_metric="accuracy",
    description="Your own data: one sub-folder of images per class.",
    options=Settings(root=ROOT, test_fraction=TEST_FRACTION, channels=CHANNELS)))
