"""Generic, code-free adapters for data users bring: a CSV of image paths with label
columns, and a folder of images per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.options import TEST_FRACTION
from medtl.data.registry import DATASETS, DatasetSpec, RawData
from medtl.settings import Bool, Choice, Settings, Text, TextList

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


def rows_text(where, limit: int = 5) -> str:
    """Rows as a user finds them (e.g. ``labels.csv line 7 ('no/1 no.jpeg')``), the first ``limit`` of them."""
    where = list(where)
    shown = "; ".join(where[:limit])
    return shown + (f"; and {len(where) - limit} more" if len(where) > limit else "")


def read_csv_table(manifest: dict, options: dict) -> RawData:
    root = Path(manifest["root"])
    csv_name = options.get("csv") or "labels.csv"
    csv = root / csv_name
    try:
        # blank lines are kept (then dropped below) so that a row's index gives its line in the file
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except FileNotFoundError:
        raise LabelFileError(f"{csv}: label file is missing") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LabelFileError(f"{csv}: malformed label file ({err})") from None
    # line in the file as an editor shows it: the header is line 1 (a quoted value spanning lines shifts it)
    line = pd.Series(np.arange(len(table)) + 2, index=table.index)
    blank = (table == "").all(axis=1)
    table, line = table[~blank].reset_index(drop=True), line[~blank].reset_index(drop=True)
    at = f"{csv_name} line " + line.astype(str)
    path_col = options.get("path_column") or "path"
    label_cols = options.get("label_columns")
    task = options.get("task", "multilabel")
    columns = list(table.columns)
    for col in [path_col] + (label_cols or []):
        if col not in columns:
            raise LabelFileError(f"{csv}: column '{col}' is missing; columns are {columns}")
    # a column named in the options must exist; unnamed, 'group' and 'split' are used where present
    named = {key: options.get(key) for key in ("group_column", "split_column")}
    for key, col in named.items():
        if col and col not in columns:
            what = ("patient ids: without them images of one patient can land in both train and test"
                    if key == "group_column" else "train/val/test per row")
            raise LabelFileError(f"{csv}: option '{key}' names column '{col}' ({what}), which is not in the file; "
                                 f"columns are {columns}. Name one of them, or leave '{key}' out")
    group_col = named["group_column"] or "group"
    split_col = named["split_column"] or "split"
    if not label_cols:
        label_cols = [c for c in columns if c not in {path_col, split_col, group_col}]
    extra = {}
    if task != "multilabel" and len(label_cols) == 1:
        # one column holding the class name per row
        col = label_cols[0]
        classes = options.get("classes") or sorted(table[col].unique())
        stray = ~table[col].isin(classes)
        if stray.any():
            unknown = sorted(table.loc[stray, col].unique())
            raise LabelFileError(
                f"{csv}: column '{col}' has labels {unknown} outside classes {classes}: "
                + rows_text(at[stray] + ": " + table.loc[stray, col].map(repr))
                + ". Fix the value, or add it to the dataset's option 'classes'")
        onehot = pd.DataFrame({c: (table[col] == c).astype(int) for c in classes})
        extra["source_label"] = table[col]   # the value as written, for messages (see medtl.data.prepare)
    else:
        classes = list(label_cols)
        values = table[classes].apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce"))
        wrong = ~values.isin([0, 1])
        if wrong.any().any():
            cells = [f"{at[i]}, column '{classes[j]}': {table.at[i, classes[j]]!r}"
                     for i, j in zip(*np.nonzero(wrong.to_numpy()))]
            not_numbers = (values.isna() & (table[classes].apply(lambda c: c.str.strip()) != "")).any().any()
            rule = (f"label columns {classes} must hold 0 or 1" if not_numbers else
                    f"label columns {wrong.columns[wrong.any()].tolist()} hold values other than 0 and 1")
            raise LabelFileError(f"{csv}: {rule} ({len(cells)} value(s)): {rows_text(cells)}. Write 0 or 1 "
                                 "(an unlabelled finding is 0); a column that is not a label belongs out of "
                                 "'label_columns'")
        onehot = values.astype(int)
    group = table[group_col].astype(str).str.strip() if group_col in columns else pd.Series("", index=table.index)
    if split_col in columns:
        split = table[split_col].str.strip().str.lower().replace({"valid": "val", "validation": "val"})
    else:
        # whole patients to one side: the hash is of the group id where there is one, of the file otherwise
        key = group.where(group != "", "path:" + table[path_col].astype(str))
        split = pd.Series(np.where(_hash_fraction(key) < float(options.get("test_fraction", 0.2)),
                                   "test", "train"), index=table.index)
    out = pd.DataFrame({"split": split, "group": group, "image_id": table[path_col]})
    out = pd.concat([out, onehot], axis=1)
    for name, column in {"source_row": at, **extra}.items():
        if name not in classes:
            out[name] = column
    paths = [str((root / p).resolve()) for p in table[path_col]]
    return RawData(out, classes, task, int(options.get("channels", 3)), paths=paths)


def _hash_fraction(keys: pd.Series) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per key: the same file always lands in the same split."""
    return pd.util.hash_pandas_object(keys.astype(str), index=False).to_numpy() % 10_000 / 10_000


#: folder names that are splits, not classes: ``train/<class>/...`` is a layout, not two classes
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


def _visible(path: Path, root: Path) -> bool:
    """Hidden files and folders (a leading '.', e.g. macOS '._x.jpg' and '.DS_Store') are not images."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _class_folders(folder: Path, root: Path) -> dict[str, list[Path]]:
    """class name -> its image files, for every visible sub-folder of ``folder``."""
    found = {}
    for d in sorted(d for d in folder.iterdir() if d.is_dir() and _visible(d, root)):
        found[d.name] = [f for f in sorted(d.rglob("*"))
                         if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and _visible(f, root)]
    return found


def read_image_folder(manifest: dict, options: dict) -> RawData:
    root = Path(manifest["root"])
    by_split = bool(options.get("split_folders", False))
    top = _class_folders(root, root)
    if not top:
        raise LabelFileError(f"{root}: expected one sub-folder per class, found none")
    splits = [d for d in top if d.lower() in SPLIT_FOLDERS]
    if by_split:
        others = sorted(set(top) - set(splits))
        if others or not splits:
            raise LabelFileError(
                f"{root}: option 'split_folders' expects only split folders {sorted(SPLIT_FOLDERS)}, each "
                f"holding one sub-folder per class; found {others or sorted(top)}")
        layout = {}
        for s in splits:
            inside = _class_folders(root / s, root)
            if not inside:
                raise LabelFileError(f"{root / s}: a split folder needs one sub-folder per class, found none")
            layout.update({(SPLIT_FOLDERS[s.lower()], c): files for c, files in inside.items()})
    else:
        if splits:
            raise LabelFileError(
                f"{root}: sub-folders {splits} are named like splits, not classes (a train/<class>/, "
                "test/<class>/ layout). Set the dataset's option 'split_folders: true' to read that layout "
                "(train, val/valid/validation, test, each with one sub-folder per class), use csv_table "
                "with a split column, or rename the folders if they really are classes")
        layout = {("", c): files for c, files in top.items()}
    empty = sorted(str(Path(s) / c) if s else c for (s, c), files in layout.items() if not files)
    if empty and len(empty) == len(layout):
        raise LabelFileError(f"{root}: no image files ({sorted(IMAGE_SUFFIXES)}) in its class folders")
    if empty:
        raise LabelFileError(
            f"{root}: class folder(s) {empty} hold no image files ({sorted(IMAGE_SUFFIXES)}); an empty "
            "folder would become a class with no images. Put its images in, or remove the folder")
    rows = [{"split": s, "path": str(f.relative_to(root)), "label": c}
            for (s, c), files in layout.items() for f in files]
    table = pd.DataFrame(rows)
    classes = sorted({c for _, c in layout})
    onehot = pd.DataFrame({c: (table["label"] == c).astype(int) for c in classes})
    task = "binary" if len(classes) == 2 else "multiclass"
    # the test split: the test folder where there is one, else a stable hash per file (image-wise) of the rest
    split = table["split"].to_numpy(dtype=object)
    if not (split == "test").any():
        drawn = np.where(_hash_fraction(table["path"]) < float(options.get("test_fraction", 0.2)), "test", "train")
        split = np.where(split == "val", "val", drawn)
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
        group_column=Text(None, nullable=True, doc="column of patient ids (a patient stays in one split); named, "
                                                   "it must exist; null: the column 'group' where there is one"),
        split_column=Text(None, nullable=True, doc="column of train/val/test; named, it must exist; null: the column "
                                                   "'split' where there is one, else the test split is drawn by "
                                                   "patient"),
        test_fraction=TEST_FRACTION,
        channels=CHANNELS,
    )))

DATASETS.register("image_folder")(DatasetSpec(
    fetch=lambda raw, opts: existing_root(opts, "image_folder"), read=read_image_folder,
    metrics=("accuracy", "auroc", "kappa", "macro_f1"), primary_metric="accuracy",
    description="Your own data: one sub-folder of images per class.",
    options=Settings(root=ROOT, test_fraction=TEST_FRACTION, channels=CHANNELS,
                     split_folders=Bool(False, doc="root holds train/, val/ (or valid/, validation/) and test/, "
                                                   "each with one sub-folder per class; without test/ the test "
                                                   "split is drawn from the rest"))))
