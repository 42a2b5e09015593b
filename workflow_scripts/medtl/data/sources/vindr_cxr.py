"""VinDr-CXR (Nguyen et al., Sci Data 2022): 18,000 chest radiographs (DICOM) with boxes of 22
local findings by radiologists. A detection dataset: its labels are boxes, read by
:func:`read_boxes`; the classification stage refuses it with a clear error.

Source layout (PhysioNet, credentialed access, ``vindr-cxr/1.0.0``)::

    annotations/annotations_train.csv   image_id, rad_id, class_name, x_min, y_min, x_max, y_max
                                        (3 radiologists per training image; 'No finding' rows have no box)
    annotations/annotations_test.csv    image_id, [rad_id,] class_name, x_min, ... (consensus of 5)
    annotations/image_labels_{train,test}.csv
    train/<image_id>.dicom   (15,000)   test/<image_id>.dicom   (3,000)

Split: the official one (train 15,000 / test 3,000); the detection stage carves its own
validation images. Boxes of the three training radiologists are kept separately
(``rad_id``); fusing them (e.g. weighted box fusion) is the detection stage's choice.
Images stay DICOM; :func:`dicom_to_png` converts one when pydicom is installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.registry import DatasetSpec
from medtl.data.sources.boxes import register_boxes, validate_boxes
from medtl.data.sources.common import (
    LabelFileError, RemoteFile, SourceInfo, detection_read, extract, find_file, manifest_root, obtain, read_csv_checked,
    register_source,
)

PAGE = "https://physionet.org/content/vindr-cxr/1.0.0/"
ARCHIVE = "vindr-cxr-1.0.0.zip"
NO_BOX = "No finding"


def fetch(raw_dir: Path, options: dict) -> dict:
    root = manifest_root(options, "vindr_cxr")
    if root is None:
        archive = obtain("vindr_cxr", RemoteFile(ARCHIVE), raw_dir, options, page=PAGE,
                         why="VinDr-CXR is on PhysioNet under credentialed access (training and a signed "
                             "data use agreement); 'Download the ZIP file' there, or mirror it and set 'root'.",
                         single_archive=True)
        root = extract(archive, Path(raw_dir) / "extracted")
        where = str(archive)
    else:
        where = str(root)
    train_csv = find_file(root, "annotations_train.csv", where)
    return {"root": str(train_csv.parent.parent.resolve()), "annotations": str(train_csv.parent.resolve())}


def _image_path(root: Path, split: str, image_id: str) -> str:
    for suffix in (".dicom", ".dcm", ".png"):
        p = root / split / f"{image_id}{suffix}"
        if p.exists():
            return str(p)
    return str(root / split / f"{image_id}.dicom")


@register_boxes("vindr_cxr")
def read_boxes(manifest: dict, options: dict) -> pd.DataFrame:
    """Box table (see medtl.data.sources.boxes) of the official train and test sets."""
    root, ann = Path(manifest["root"]), Path(manifest["annotations"])
    frames = []
    for split in ("train", "test"):
        csv = ann / f"annotations_{split}.csv"
        if split == "test" and not csv.exists():
            continue
        df = read_csv_checked(csv, ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"])
        for col in ("x_min", "y_min", "x_max", "y_max"):
            if not pd.api.types.is_numeric_dtype(df[col]):
                values = pd.to_numeric(df[col], errors="coerce")
                if (values.isna() & df[col].notna()).any():
                    raise LabelFileError(f"{csv}: column '{col}' holds non-numeric coordinates")
                df[col] = values
        empty = df["class_name"].eq(NO_BOX) | df[["x_min", "y_min", "x_max", "y_max"]].isna().all(axis=1)
        frames.append(pd.DataFrame({
            "image": [_image_path(root, split, i) for i in df["image_id"]],
            "image_id": df["image_id"].astype(str),
            "class": np.where(empty, "", df["class_name"].astype(str)),
            "x1": df["x_min"].where(~empty), "y1": df["y_min"].where(~empty),
            "x2": df["x_max"].where(~empty), "y2": df["y_max"].where(~empty),
            "split": split,
            "rad_id": df["rad_id"].astype(str) if "rad_id" in df.columns else "",
        }))
    return validate_boxes(pd.concat(frames, ignore_index=True), str(ann))


def dicom_to_png(src: str | Path, dst: str | Path) -> Path:
    """Convert one VinDr DICOM to an 8-bit PNG (VOI LUT, MONOCHROME1 inverted). Needs pydicom."""
    try:
        import pydicom
        from pydicom.pixel_data_handlers.util import apply_voi_lut
    except ImportError:
        raise ImportError("converting VinDr-CXR DICOM files needs pydicom (pip install pydicom; compressed "
                          "files may also need pylibjpeg); the box table itself does not") from None
    from PIL import Image

    ds = pydicom.dcmread(str(src))
    arr = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        arr = arr.max() - arr
    arr = (arr - arr.min()) / max(arr.max() - arr.min(), 1e-9) * 255.0
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.round().astype(np.uint8)).save(dst)
    return dst


register_source("vindr_cxr", DatasetSpec(
    fetch=fetch, read=detection_read("vindr_cxr", "medtl.data.sources.vindr_cxr"), metrics=("map",),
    primary_metric="map",
    description="VinDr-CXR: chest radiographs with boxes of 22 local findings (detection; see read_boxes).",
    license="PhysioNet Credentialed Health Data License 1.5.0", urls=(PAGE,), options={"raw_data": "raw"},
), SourceInfo(
    title="VinDr-CXR 1.0.0 (PhysioNet)", access="manual", page=PAGE,
    license="PhysioNet Credentialed Health Data License 1.5.0 (credentialed access, signed DUA)",
    split="official: 15,000 train (3 radiologists each) / 3,000 test (consensus)",
    size="18,000 DICOM images, about 200 GB", files=(ARCHIVE,), task="detection",
))
