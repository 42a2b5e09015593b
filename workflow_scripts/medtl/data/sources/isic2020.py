"""ISIC 2020 (SIIM-ISIC Melanoma Classification, Rotemberg et al., Sci Data 2021):
33,126 dermoscopic images of 2,056 patients, melanoma vs benign.

Source layout (public ISIC challenge bucket, no login)::

    ISIC_2020_Training_JPEG.zip                 train/ISIC_NNNNNNN.jpg
    ISIC_2020_Training_GroundTruth_v2.csv       image_name, patient_id, lesion_id, sex, age_approx,
                                                anatom_site_general_challenge, diagnosis, benign_malignant, target
    ISIC_2020_Training_Duplicates.csv           image_name_1, image_name_2 (425 pairs)

Duplicates: the second image of every listed pair is removed (option ``drop_duplicates``).
Split: the challenge's test labels were never released, so the labelled training set is
split patient-wise (``patient_id``): a stable hash puts ``test_fraction`` (default 0.2)
of the patients in the test set; validation is carved patient-wise from the rest.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtl.data.options import TEST_FRACTION
from medtl.data.registry import DatasetSpec, RawData
from medtl.settings import Bool, Settings, Text
from medtl.data.sources.common import (
    ArchiveError, LabelFileError, RemoteFile, SourceInfo, extract, hash_split, index_images, manifest_root,
    obtain_all, read_csv_checked, register_source, single_label_raw,
)

PAGE = "https://challenge.isic-archive.com/data/#2020"
BASE = "https://isic-challenge-data.s3.amazonaws.com/2020/"
GROUND_TRUTH = RemoteFile("ISIC_2020_Training_GroundTruth_v2.csv", BASE + "ISIC_2020_Training_GroundTruth_v2.csv")
DUPLICATES = RemoteFile("ISIC_2020_Training_Duplicates.csv", BASE + "ISIC_2020_Training_Duplicates.csv")
IMAGES = RemoteFile("ISIC_2020_Training_JPEG.zip", BASE + "ISIC_2020_Training_JPEG.zip")
CLASSES = ["benign", "malignant"]


def fetch(raw_dir: Path, options: dict) -> dict:
    raw_dir = Path(raw_dir)
    root = manifest_root(options, "isic2020")
    remotes = [GROUND_TRUTH, DUPLICATES] + ([] if root else [IMAGES])
    paths = obtain_all("isic2020", remotes, raw_dir, options, page=PAGE)
    if root is None:
        root = extract(paths[2], raw_dir / "extracted", keep=lambda n: n.lower().endswith(".jpg"))
    return {"root": str(Path(root).resolve()), "ground_truth": str(paths[0].resolve()),
            "duplicates": str(paths[1].resolve())}


def read(manifest: dict, options: dict) -> RawData:
    gt_csv, dup_csv = Path(manifest["ground_truth"]), Path(manifest["duplicates"])
    gt = read_csv_checked(gt_csv, ["image_name", "patient_id", "target"], dtype=str, keep_default_na=False)
    if not gt["target"].isin(["0", "1"]).all():
        bad = gt.loc[~gt["target"].isin(["0", "1"]), "target"].iloc[0]
        raise LabelFileError(f"{gt_csv}: column 'target' must be 0 or 1, found {bad!r}")
    if options.get("drop_duplicates", True):
        dups = read_csv_checked(dup_csv, [], dtype=str, keep_default_na=False)
        second = "image_name_2" if "image_name_2" in dups.columns else (dups.columns[1] if dups.shape[1] > 1 else None)
        if second is None:
            raise LabelFileError(f"{dup_csv}: expected columns image_name_1, image_name_2")
        gt = gt[~gt["image_name"].isin(set(dups[second]))].reset_index(drop=True)
    images = index_images(Path(manifest["root"]), [".jpg", ".jpeg"])
    absent = [n for n in gt["image_name"] if n not in images]
    if absent:
        raise ArchiveError(f"{manifest['root']}: {len(absent)} image(s) of {gt_csv.name} missing, e.g. "
                           f"'{absent[0]}.jpg'; is {IMAGES.name} complete?")
    # patients without an id (none in v2, kept for safety) are split image by image
    group = gt["patient_id"].where(gt["patient_id"] != "", gt["image_name"])
    df = pd.DataFrame({"split": hash_split(group, float(options.get("test_fraction", 0.2))), "group": group,
                       "image_id": gt["image_name"], "label": gt["target"].map({"0": "benign", "1": "malignant"}),
                       "path": [str(images[n]) for n in gt["image_name"]]})
    return single_label_raw(df, CLASSES, 3)


register_source("isic2020", DatasetSpec(
    fetch=fetch, read=read, metrics=("auroc", "accuracy"), primary_metric="auroc",
    description="ISIC 2020 dermoscopy, melanoma vs benign, duplicates removed; patient-wise split.",
    license="CC BY-NC 4.0", urls=(PAGE, GROUND_TRUTH.url, DUPLICATES.url, IMAGES.url),
    options=Settings(raw_data=Text("raw", doc="folder with the files put there by hand"), test_fraction=TEST_FRACTION,
                     drop_duplicates=Bool(True, doc="drop the images ISIC lists as duplicates")),
), SourceInfo(
    title="ISIC 2020 Challenge (SIIM-ISIC melanoma)", access="automatic", page=PAGE,
    license="CC BY-NC 4.0",
    split="patient-wise (patient_id): 20 % of patients -> test by stable hash (challenge test labels are "
          "unpublished); val carved patient-wise; 425 duplicates removed",
    size="23 GB JPEG zip; 33,126 images (584 melanoma), 32,701 after removing duplicates",
    files=(GROUND_TRUTH.name, DUPLICATES.name, IMAGES.name),
))
