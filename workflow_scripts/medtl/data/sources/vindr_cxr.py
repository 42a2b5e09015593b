"""VinDr-CXR (Nguyen et al., Sci Data 2022): 18,000 frontal chest radiographs (DICOM) with boxes
of 22 local findings. A dense detection source; its images also carry CheXmask's lung and heart
masks (``chexmask``).

Source layout (PhysioNet, credentialed access, ``vindr-cxr/1.0.0``)::

    annotations/annotations_train.csv   image_id, rad_id, class_name, x_min, y_min, x_max, y_max
                                        (3 radiologists per image, each independently; a radiologist
                                        who saw nothing local wrote one 'No finding' row, no box)
    annotations/annotations_test.csv    the same columns: the consensus of 5 radiologists, one set
    annotations/image_labels_{train,test}.csv      global labels (not used here)
    train/<image_id>.dicom   (15,000)   test/<image_id>.dicom   (3,000)

Split: the official one, train 15,000 / test 3,000; validation is carved image-wise from
train (no patient ids are released).

Readers: the training boxes of the three radiologists are fused per image and class by weighted
boxes fusion (:func:`medtl.data.sources.boxes.weighted_boxes_fusion`, IoU above ``fusion_iou``,
0.5), the way the VinBigData Kaggle competition's public solutions turned them into one label
set like the test set's consensus. ``min_readers`` (1) drops fused boxes fewer radiologists drew.
The test set is already a consensus and is taken as it is.

Classes: by default the 14 local findings of that competition (all findings with enough
boxes; the other 8 are rare); ``classes: all`` takes every local finding in the files, or
give a list. Boxes of other findings are left out; their images stay as negatives.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.adapters import LabelFileError
from medtl.data.dense_registry import DETECTION, DenseDatasetSpec, DenseRaw
from medtl.data.imageio import image_size
from medtl.data.options import LIMIT
from medtl.data.sources.boxes import box_raw, fuse_readers, subset
from medtl.data.sources.common import (
    ArchiveError, RemoteFile, SourceInfo, hash_split, locate_unpacked, log, read_csv_checked,
    register_dense_source,
)
from medtl.settings import Bool, Int, Number, Settings, Text, TextList

PAGE = "https://physionet.org/content/vindr-cxr/1.0.0/"
FILES_URL = "https://physionet.org/files/vindr-cxr/1.0.0/"
ARCHIVE = "vindr-cxr-1.0.0.zip"
LICENSE = "PhysioNet Credentialed Health Data License 1.5.0"
NO_BOX = "no finding"
# the competition's 14 local findings (class ids 0-13; 14 was 'No finding')
KAGGLE_CLASSES = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
                  "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
                  "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis"]
COORDS = ["x_min", "y_min", "x_max", "y_max"]
OPTIONS = Settings(
    raw_data=Text("raw", doc="folder with the files put there by hand"),
    classes=TextList("kaggle", also=("kaggle", "all"),
                     doc="kaggle: the competition's 14 local findings; all: every local finding in the files; "
                         "or a list of finding names"),
    fusion_iou=Number(0.5, minimum=0, maximum=1,
                      doc="IoU above which a radiologist's training box joins a cluster (weighted boxes fusion)"),
    min_readers=Int(1, minimum=1, doc="fused training boxes drawn by fewer radiologists are dropped"),
    negatives=Bool(True, doc="keep the images without a box of the classes"),
    test_fraction=Number(0.2, above=0, below=1,
                         doc="fraction of the images drawn into test where annotations_test.csv is absent"),
    limit=LIMIT,
)
WHY = ("VinDr-CXR is on PhysioNet under credentialed access (CITI training and a signed data use agreement). "
       "It needs annotations/annotations_train.csv, annotations/annotations_test.csv and the DICOM folders "
       "train/ and test/: put those folders, unpacked, into the folder below, or mirror them with "
       f"'wget -r -N -c -np --user <your PhysioNet user> --ask-password {FILES_URL}' and set the option "
       "'root' to the mirrored folder.")


def locate(raw_dir: Path, options: dict) -> Path:
    """The VinDr-CXR folder (with annotations/, train/, test/) on this machine; also used by ``chexmask``."""
    train_csv = locate_unpacked("vindr_cxr", RemoteFile(ARCHIVE), "annotations_train.csv", raw_dir, options,
                                page=PAGE, why=WHY)
    return train_csv.parent.parent.resolve()


def fetch(raw_dir: Path, options: dict) -> dict:
    root = locate(raw_dir, options)
    return {"root": str(root), "annotations": str(root / "annotations")}


def image_path(root: Path, split: str, image_id: str) -> Path:
    for suffix in (".dicom", ".dcm", ".png"):
        path = root / split / f"{image_id}{suffix}"
        if path.exists():
            return path
    return root / split / f"{image_id}.dicom"


def _classes(found: list[str], option) -> list[str]:
    if option in (None, "kaggle"):
        return list(KAGGLE_CLASSES)
    if option == "all":
        return sorted(found, key=str.lower)
    if isinstance(option, str) or not all(isinstance(c, str) for c in option):
        raise ValueError(f"vindr_cxr: option 'classes' is 'kaggle', 'all' or a list of finding names, got {option!r}")
    return list(option)


def _annotations(csv: Path) -> pd.DataFrame:
    df = read_csv_checked(csv, ["image_id", "class_name", *COORDS], dtype={"image_id": str, "rad_id": str})
    for col in COORDS:
        values = pd.to_numeric(df[col], errors="coerce")
        if (values.isna() & df[col].notna()).any():
            raise LabelFileError(f"{csv}: column '{col}' holds non-numeric coordinates")
        df[col] = values
    df["class_name"] = df["class_name"].astype(str).str.strip()
    return df


def read_detection(manifest: dict, options: dict) -> DenseRaw:
    options = {**OPTIONS, **options}
    root, ann = Path(manifest["root"]), Path(manifest["annotations"])
    frames = {"train": _annotations(ann / "annotations_train.csv")}
    if (ann / "annotations_test.csv").exists():
        frames["test"] = _annotations(ann / "annotations_test.csv")
    else:
        log("vindr_cxr", f"{ann / 'annotations_test.csv'} is absent: the test split is carved from train")
    found = sorted({c for df in frames.values() for c in df["class_name"] if c.lower() != NO_BOX})
    classes = _classes(found, options["classes"])
    canonical = {c.lower(): c for c in classes}
    unknown = [c for c in classes if c.lower() not in {f.lower() for f in found}]
    if unknown and options["classes"] not in (None, "kaggle"):
        raise ValueError(f"vindr_cxr: option 'classes' names {unknown}, which the annotations do not have; "
                         f"they have {found}")
    images, boxes = [], []
    for split, df in frames.items():
        for image_id in dict.fromkeys(df["image_id"]):
            images.append({"image_id": image_id, "split": split, "image": image_path(root, split, image_id)})
        has_box = df["class_name"].str.lower().ne(NO_BOX) & df[COORDS].notna().all(axis=1)
        kept = df[has_box & df["class_name"].str.lower().isin(canonical)]
        part = pd.DataFrame({"image_id": kept["image_id"].to_numpy(),
                             "class": kept["class_name"].str.lower().map(canonical).to_numpy(),
                             "x1": kept["x_min"].to_numpy(), "y1": kept["y_min"].to_numpy(),
                             "x2": kept["x_max"].to_numpy(), "y2": kept["y_max"].to_numpy()})
        if split == "train" and "rad_id" in df.columns:
            part["reader"] = kept["rad_id"].astype(str).to_numpy()
            n = len(part)
            part = fuse_readers(part, float(options["fusion_iou"]), int(options["min_readers"]))
            log("vindr_cxr", f"{split}: {n} radiologist boxes fused into {len(part)} (WBF, IoU > "
                             f"{options['fusion_iou']}, at least {options['min_readers']} reader(s))")
        boxes.append(part)
    images = pd.DataFrame(images)
    if "test" not in frames:
        images["split"] = hash_split(images["image_id"], float(options["test_fraction"]))
    boxes = pd.concat(boxes, ignore_index=True)
    if not options["negatives"]:
        images = images[images["image_id"].isin(boxes["image_id"])]
    images = subset(images, options.get("limit"))   # before reading sizes: only the subset's DICOM headers
    missing = [str(p) for p in images["image"] if not Path(p).exists()]
    if missing:
        raise ArchiveError(f"{len(missing)} image(s) listed in {ann} are missing, e.g. {missing[0]}; "
                           "is the copy complete (train/ and test/ hold the DICOM files)?")
    sizes = np.array([image_size(p) for p in images["image"]], dtype=np.float64).reshape(-1, 2)
    return box_raw(images.assign(group="", width=sizes[:, 0], height=sizes[:, 1]), boxes, classes, str(ann))

register_dense_source("vindr_cxr", DenseDatasetSpec(
    fetch=fetch, readers={DETECTION: read_detection},
    description="VinDr-CXR: chest radiographs (DICOM) with radiologists' boxes of local findings; official split.",
    license=LICENSE, urls=(PAGE,),
    options=OPTIONS,
), SourceInfo(
    title="VinDr-CXR 1.0.0 (PhysioNet)", access="manual", page=PAGE,
    license=f"{LICENSE} (credentialed access, signed DUA)",
    split="official: 15,000 train (3 radiologists each, fused by WBF) / 3,000 test (consensus of 5)",
    size="18,000 DICOM images, about 200 GB", files=(ARCHIVE,), task="detection",
))
