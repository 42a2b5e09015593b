"""Generic, code-free adapters for dense data users bring.

- ``yolo_folder``: the Ultralytics layout, ``images/`` and ``labels/`` side by side, one
  ``class xc yc w h`` line (fractions of the image) per box; images may sit in
  ``train/``/``val/``/``test/`` sub-folders, which then give the split;
- ``mask_folder``: images plus one binary mask file per structure, either listed in an index
  CSV (one column per structure, an empty cell = not annotated) or found as
  ``masks/<structure>/<image stem>.<ext>``.

Both take the same split options: ``splits_csv`` (columns ``image`` = file name or stem,
``split``, optional ``group``), else split sub-folders, else a stable hash of the file name
puts ``test_fraction`` of the images in test. ``group_pattern`` (a regex with one group,
applied to the file stem) gives patient ids, so validation is carved patient-wise.
``limit`` keeps a stable subset of that many images (the smallest hashes), for quick runs.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.adapters import IMAGE_SUFFIXES, LabelFileError, _hash_fraction, existing_root
from medtl.data.dense_registry import BOX_COLUMNS, DENSE_DATASETS, DETECTION, SEGMENTATION, DenseDatasetSpec, \
    DenseRaw
from medtl.data.options import LIMIT, TEST_FRACTION
from medtl.data.store import SPLITS
from medtl.settings import Anything, Choice, Settings, Text, TextList

SPLIT_ALIASES = {"valid": "val", "validation": "val"}


def _images_under(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise LabelFileError(f"{folder}: image folder does not exist")
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
    if not files:
        raise LabelFileError(f"{folder}: no image files ({sorted(IMAGE_SUFFIXES)})")
    return files


def _subset(names: list[str], limit) -> np.ndarray:
    """Positions of a stable subset of ``limit`` names (all when limit is empty)."""
    if not limit or int(limit) >= len(names):
        return np.arange(len(names))
    # a salted hash: the split hash of the kept images must still spread over [0, 1)
    order = np.argsort(_hash_fraction(pd.Series(names).map(lambda n: f"subset/{n}")), kind="stable")
    return np.sort(order[: int(limit)])


def assign_splits(root: Path, names: list[str], options: dict, folder_split: list[str | None]) -> pd.DataFrame:
    """``split`` and ``group`` for each image ``names[i]`` (relative path)."""
    stems = [Path(n).stem for n in names]
    split = pd.Series([s for s in folder_split], dtype=object)
    group = pd.Series([""] * len(names), dtype=object)
    if options.get("splits_csv"):
        csv = (root / options["splits_csv"]).resolve()
        try:
            table = pd.read_csv(csv, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise LabelFileError(f"{csv}: splits file is missing") from None
        for col in ("image", "split"):
            if col not in table.columns:
                raise LabelFileError(f"{csv}: column '{col}' is missing; columns are {list(table.columns)}")
        by_name = {Path(v).name: i for i, v in enumerate(table["image"])}
        by_stem = {Path(v).stem: i for i, v in enumerate(table["image"])}
        rows = [by_name.get(Path(n).name, by_stem.get(s)) for n, s in zip(names, stems)]
        unmatched = [n for n, r in zip(names, rows) if r is None]
        if unmatched:
            raise LabelFileError(f"{csv}: no split for {len(unmatched)} images, e.g. {unmatched[:3]}")
        split = table["split"].iloc[rows].str.strip().str.lower().replace(SPLIT_ALIASES).reset_index(drop=True)
        if "group" in table.columns:
            group = table["group"].iloc[rows].reset_index(drop=True)
    elif split.isna().any():
        hashed = _hash_fraction(pd.Series(names))
        split = pd.Series(np.where(hashed < float(options.get("test_fraction", 0.2)), "test", "train"), dtype=object)
    bad = sorted(set(split) - set(SPLITS))
    if bad:
        raise LabelFileError(f"{root}: unknown split names {bad}; use {SPLITS}")
    if options.get("group_pattern"):
        pattern = re.compile(options["group_pattern"])
        found = [pattern.search(s) for s in stems]
        group = pd.Series([m.group(1) if m else "" for m in found], dtype=object)
    return pd.DataFrame({"split": split.to_numpy(), "group": group.astype(str).to_numpy(), "image_id": names})


def _folder_split(rel: Path) -> str | None:
    first = rel.parts[0].lower() if len(rel.parts) > 1 else ""
    first = SPLIT_ALIASES.get(first, first)
    return first if first in SPLITS else None


def _classes(root: Path, options: dict) -> list[str]:
    if options.get("classes"):
        return [str(c) for c in options["classes"]]
    path = (root / options.get("classes_file", "classes.txt")).resolve()
    if not path.exists():
        raise LabelFileError(f"{path}: class names file is missing; set 'classes' or 'classes_file'")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise LabelFileError(f"{path}: no class names")
    return names


def read_yolo_folder(manifest: dict, options: dict) -> DenseRaw:
    root = Path(manifest["root"])
    image_dir = root / options.get("images", "images")
    label_dir = root / options.get("labels", "labels")
    classes = _classes(root, options)
    files = _images_under(image_dir)
    rel = [f.relative_to(image_dir) for f in files]
    keep = _subset([r.as_posix() for r in rel], options.get("limit"))
    files, rel = [files[i] for i in keep], [rel[i] for i in keep]
    boxes = []
    for row, r in enumerate(rel):
        label = (label_dir / r).with_suffix(".txt")
        if not label.exists():
            continue  # an image without a label file has no boxes (a negative)
        for n, line in enumerate(label.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                cls, xc, yc, w, h = int(parts[0]), *map(float, parts[1:5])
            except (ValueError, TypeError):
                raise LabelFileError(f"{label}:{n}: expected 'class xc yc w h', got {line!r}") from None
            if not 0 <= cls < len(classes):
                raise LabelFileError(f"{label}:{n}: class id {cls} outside 0..{len(classes) - 1}")
            x1, y1, x2, y2 = np.clip([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], 0.0, 1.0)
            boxes.append({"row": row, "class": classes[cls], "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    table = assign_splits(root, [r.as_posix() for r in rel], options, [_folder_split(r) for r in rel])
    return DenseRaw(table=table, paths=[str(f) for f in files], classes=classes, task=DETECTION,
                    channels=int(options.get("channels", 1)),
                    boxes=pd.DataFrame(boxes, columns=["row", "class", *BOX_COLUMNS]))


def read_mask_folder(manifest: dict, options: dict) -> DenseRaw:
    root = Path(manifest["root"])
    structures = options.get("structures")
    if not structures:
        raise ValueError("dataset type 'mask_folder' needs option 'structures' (names, or name: index column)")
    if options.get("index"):
        index = (root / options["index"]).resolve()
        try:
            table = pd.read_csv(index, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise LabelFileError(f"{index}: mask index is missing") from None
        columns = structures if isinstance(structures, dict) else {s: s for s in structures}
        image_col = options.get("image_column", "image")
        for col in [image_col, *columns.values()]:
            if col not in table.columns:
                raise LabelFileError(f"{index}: column '{col}' is missing; columns are {list(table.columns)}")
        keep = _subset(list(table[image_col]), options.get("limit"))
        table = table.iloc[keep].reset_index(drop=True)
        names = list(table[image_col])
        paths = [str(root / n) for n in names]
        masks = [[str(root / v) if v.strip() else None for v in (row[c] for c in columns.values())]
                 for _, row in table.iterrows()]
        folder_split = [None] * len(names)
        names_out = list(columns)
    else:
        names_out = list(structures)
        image_dir = root / options.get("images", "images")
        mask_dir = root / options.get("masks", "masks")
        files = _images_under(image_dir)
        rel = [f.relative_to(image_dir) for f in files]
        keep = _subset([r.as_posix() for r in rel], options.get("limit"))
        files, rel = [files[i] for i in keep], [rel[i] for i in keep]
        masks = []
        for r in rel:
            row = []
            for s in names_out:
                found = [p for p in (mask_dir / s / r.parent).glob(f"{r.stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
                row.append(str(found[0]) if found else None)
            masks.append(row)
        names = [r.as_posix() for r in rel]
        paths = [str(f) for f in files]
        folder_split = [_folder_split(r) for r in rel]
    if not any(m is not None for row in masks for m in row):
        raise LabelFileError(f"{root}: no mask files found for structures {names_out}")
    split_table = assign_splits(root, names, options, folder_split)
    return DenseRaw(table=split_table, paths=paths, classes=names_out, task=SEGMENTATION,
                    channels=int(options.get("channels", 1)), masks=masks)


FOLDER_OPTIONS = Settings(
    root=Text(doc="the dataset's folder"),
    images=Text("images", doc="folder of the images, relative to root"),
    splits_csv=Text(None, nullable=True, doc="CSV of image, split (and group), relative to root"),
    test_fraction=TEST_FRACTION,
    group_pattern=Text(None, nullable=True, doc="regex with one group: the patient id in a file stem"),
    limit=LIMIT,
    channels=Choice(1, choices=(1, 3), doc="channels of the stored images"),
)

DENSE_DATASETS.register("yolo_folder")(DenseDatasetSpec(
    fetch=lambda raw, opts: existing_root(opts, "yolo_folder"),
    readers={DETECTION: read_yolo_folder},
    description="Your own detection data: images/ and labels/ in the Ultralytics (YOLO) text format.",
    options=Settings(
        FOLDER_OPTIONS,
        labels=Text("labels", doc="folder of the YOLO label files, relative to root"),
        classes=TextList(None, nullable=True, doc="class names, by class index"),
        classes_file=Text("classes.txt", doc="file of class names, one a line (without classes)"),
    )))

DENSE_DATASETS.register("mask_folder")(DenseDatasetSpec(
    fetch=lambda raw, opts: existing_root(opts, "mask_folder"),
    readers={SEGMENTATION: read_mask_folder},
    description="Your own segmentation data: images plus one binary mask file per structure.",
    options=Settings(
        FOLDER_OPTIONS,
        structures=Anything(meaning="a list of structure names, or structure -> index column",
                            doc="the structures masked"),
        index=Text(None, nullable=True, doc="CSV of image and one mask file column per structure"),
        image_column=Text("image", doc="the index's image column"),
        masks=Text("masks", doc="folder of masks/<structure>/<image stem>.* (without an index)"),
    )))
