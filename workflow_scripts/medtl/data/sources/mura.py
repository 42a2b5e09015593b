"""MURA v1.1 (Rajpurkar et al., 2018): upper-extremity radiographs, normal vs abnormal, as
one dataset per body part (the studies use shoulder, wrist and humerus).

Source layout (``MURA-v1.1.zip``)::

    MURA-v1.1/train_image_paths.csv      no header: MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png
    MURA-v1.1/train_labeled_studies.csv  no header: MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/,1
    MURA-v1.1/valid_image_paths.csv, MURA-v1.1/valid_labeled_studies.csv
    MURA-v1.1/{train,valid}/XR_<PART>/patientNNNNN/studyN_<positive|negative>/imageN.png

Labels are per study (every image of a study gets the study's label), read from the
``*_labeled_studies.csv`` files. Split: the official validation set is the test set
(its patients are disjoint from training); validation is carved from training
patient-wise. The three datasets share one archive: put it in ``<raw_data>/mura/``
(or ``<raw_data>/<dataset>/``); each unpacks only its own body part.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medtl.data.registry import DatasetSpec, RawData
from medtl.settings import Settings, Text
from medtl.data.sources.common import (
    LabelFileError, RemoteFile, SourceInfo, extract, find_file, label_table, log, manifest_root, obtain,
    onehot, register_source,
)

PAGE = "https://stanfordmlgroup.github.io/competitions/mura/"
ARCHIVE = "MURA-v1.1.zip"
CLASSES = ["normal", "abnormal"]
BODY_PARTS = {"mura_shoulder": "XR_SHOULDER", "mura_wrist": "XR_WRIST", "mura_humerus": "XR_HUMERUS"}


def make_fetch(name: str, part: str):
    def fetch(raw_dir: Path, options: dict) -> dict:
        root = manifest_root(options, name)
        if root is None:
            archive = obtain(name, RemoteFile(ARCHIVE), raw_dir, options, page=PAGE,
                             why="MURA is released under the Stanford research use agreement, after registration.",
                             folders=("mura",), single_archive=True)
            root = extract(archive, Path(raw_dir) / "extracted",
                           keep=lambda n: n.endswith(".csv") or f"/{part}/" in n)
            where = str(archive)
        else:
            where = str(root)
        paths_csv = find_file(root, "train_image_paths.csv", where)
        return {"root": str(paths_csv.parent.resolve()), "body_part": part}
    return fetch


def _read_split(folder: Path, split: str, part: str) -> pd.DataFrame:
    paths_csv = folder / f"{split}_image_paths.csv"
    studies_csv = folder / f"{split}_labeled_studies.csv"
    for f in (paths_csv, studies_csv):
        if not f.is_file():
            raise LabelFileError(f"{f}: label file is missing")
    try:
        images = pd.read_csv(paths_csv, header=None, dtype=str, keep_default_na=False)
        studies = pd.read_csv(studies_csv, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LabelFileError(f"{folder}: malformed MURA label file ({err})") from None
    if studies.shape[1] != 2:
        raise LabelFileError(f"{studies_csv}: expected 2 columns (study folder, label), found {studies.shape[1]}")
    if not studies[1].isin(["0", "1"]).all():
        bad = studies.loc[~studies[1].isin(["0", "1"]), 1].iloc[0]
        raise LabelFileError(f"{studies_csv}: labels must be 0 or 1, found {bad!r}")
    label_of = dict(zip(studies[0].map(lambda s: s.rstrip("/")), studies[1].astype(int)))
    images = images[images[0].str.contains(f"/{part}/", regex=False)].reset_index(drop=True)
    if images.empty:
        raise LabelFileError(f"{paths_csv}: no {part} images listed")
    study = images[0].map(lambda p: p.rsplit("/", 1)[0])
    unknown = sorted(set(study) - set(label_of))
    if unknown:
        raise LabelFileError(f"{studies_csv}: no label for study '{unknown[0]}' (and {len(unknown) - 1} more)")
    return pd.DataFrame({"split": "train" if split == "train" else "test",
                         "group": images[0].map(lambda p: (re.search(r"(patient\d+)", p) or [""])[0]),
                         "image_id": images[0],
                         "label": study.map(label_of).map(lambda v: CLASSES[v])})


def read(manifest: dict, options: dict) -> RawData:
    folder, part = Path(manifest["root"]), manifest["body_part"]
    table = pd.concat([_read_split(folder, s, part) for s in ("train", "valid")], ignore_index=True)
    # CSV paths start with 'MURA-v1.1/': resolve from the folder's parent, or inside it if renamed
    first = table["image_id"].iloc[0]
    base = folder.parent if (folder.parent / first).exists() else None
    paths = [str(base / p) if base else str(folder.joinpath(*Path(p).parts[1:])) for p in table["image_id"]]
    # the first study's Table 2 counts match patients, not images (CheXpert's 64,540 / 200 are its patient
    # counts): printed so a user can compare (docs/fidelity.md)
    patients = table.groupby("split")["group"].nunique()
    log(manifest.get("dataset", "mura"), f"{part}: {len(table)} images; patients: {patients.get('train', 0)} train, {patients.get('test', 0)} "
        f"official valid (used as test); the first study's Table 2 gives 2694/173 (shoulder), 3267/207 (wrist), "
        f"587/132 (humerus)")
    out = label_table(table["split"], table["group"], table["image_id"], onehot(table["label"], CLASSES))
    return RawData(out, list(CLASSES), "binary", 1, paths=paths)


for _name, _part in BODY_PARTS.items():
    register_source(_name, DatasetSpec(
        fetch=make_fetch(_name, _part), read=read, metrics=("accuracy", "kappa"), primary_metric="accuracy",
        description=f"MURA v1.1 {_part[3:].lower()} radiographs, normal vs abnormal (study labels); "
                    "official validation set as test.",
        license="Stanford University MURA Dataset Research Use Agreement (non-commercial research)",
        urls=(PAGE,), options=Settings(raw_data=Text("raw", doc="folder with the files put there by hand")),
    ), SourceInfo(
        title=f"MURA v1.1, {_part[3:].lower()} (Stanford)", access="manual", page=PAGE,
        license="Stanford MURA Research Use Agreement (registration; non-commercial research)",
        split="train -> train (val carved patient-wise); official valid set -> test",
        size={"XR_SHOULDER": "8,379 train + 563 valid images", "XR_WRIST": "9,752 train + 659 valid images",
              "XR_HUMERUS": "1,272 train + 288 valid images"}[_part] + " (whole archive 3.3 GB)",
        files=(ARCHIVE,),
    ))
