"""CheXpert (Irvin et al., AAAI 2019): chest radiographs, 5 competition findings, multi-label.

Source layout (``CheXpert-v1.0-small.zip``, or ``CheXpert-v1.0.zip`` with ``variant: full``)::

    CheXpert-v1.0-small/train.csv     Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, ..., 14 observations
    CheXpert-v1.0-small/valid.csv     the official validation set (radiologist consensus, no uncertain labels)
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

Label values are 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned,
taken as negative). How an uncertain label is used is a per-finding policy (option
``uncertain``): ``ones`` (U-Ones), ``zeros`` (U-Zeros) or ``ignore`` (drop the image
from training). The default is the common choice after Irvin et al.'s ablation:
U-Ones for atelectasis and edema, U-Zeros for cardiomegaly, consolidation and pleural
effusion.

Split: the official validation set (``valid.csv``, 234 images, 200 patients) is the
test set, as in the studies; the validation split for early stopping is carved from
``train.csv`` patient-wise by the prepare step (patient id from the path).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.registry import DatasetSpec, RawData
from medtl.settings import Bool, Choice, Settings, Table, Text
from medtl.data.sources.common import (
    LabelFileError, RemoteFile, SourceInfo, extract, find_file, label_table, manifest_root,
    merge_dict_option, obtain, read_csv_checked, register_source,
)

PAGE = "https://stanfordaimi.azurewebsites.net/datasets/8cbd9ed4-2eb9-4565-affc-111cf4f7ebe2"
ARCHIVES = {"small": "CheXpert-v1.0-small.zip", "full": "CheXpert-v1.0.zip"}
# source column -> class name in the store
FINDINGS = {"Cardiomegaly": "cardiomegaly", "Edema": "edema", "Consolidation": "consolidation",
            "Atelectasis": "atelectasis", "Pleural Effusion": "pleural_effusion"}
DEFAULT_UNCERTAIN = {"atelectasis": "ones", "edema": "ones", "cardiomegaly": "zeros",
                     "consolidation": "zeros", "pleural_effusion": "zeros"}
POLICIES = {"ones": "ones", "u-ones": "ones", "u_ones": "ones", "zeros": "zeros", "u-zeros": "zeros",
            "u_zeros": "zeros", "ignore": "ignore"}


def fetch(raw_dir: Path, options: dict) -> dict:
    root = manifest_root(options, "chexpert")
    if root is None:
        variant = options.get("variant", "small")
        if variant not in ARCHIVES:
            raise ValueError(f"chexpert: option 'variant' must be one of {sorted(ARCHIVES)}, got {variant!r}")
        archive = obtain("chexpert", RemoteFile(ARCHIVES[variant]), raw_dir, options, page=PAGE,
                         why="CheXpert is released under the Stanford research use agreement, after registration.",
                         single_archive=True)
        # only the CSVs and the images; the archive holds nothing else worth unpacking
        root = extract(archive, Path(raw_dir) / "extracted",
                       keep=lambda n: n.endswith((".csv", ".jpg", ".png")))
        where = str(archive)
    else:
        where = str(root)
    train_csv = find_file(root, "train.csv", where)
    valid_csv = find_file(train_csv.parent, "valid.csv", where)
    return {"root": str(train_csv.parent.resolve()), "train_csv": str(train_csv.resolve()),
            "valid_csv": str(valid_csv.resolve())}


def _policies(options: dict) -> dict[str, str]:
    raw = merge_dict_option(options, "uncertain", DEFAULT_UNCERTAIN)
    out = {}
    for finding, policy in raw.items():
        if finding not in DEFAULT_UNCERTAIN:
            raise ValueError(f"chexpert: option 'uncertain' names unknown finding '{finding}' "
                             f"(findings: {sorted(DEFAULT_UNCERTAIN)})")
        if str(policy).lower() not in POLICIES:
            raise ValueError(f"chexpert: uncertain-label policy for '{finding}' must be ones, zeros or ignore, "
                             f"got {policy!r}")
        out[finding] = POLICIES[str(policy).lower()]
    return out


def _labels(df: pd.DataFrame, csv: Path, policies: dict[str, str]) -> tuple[pd.DataFrame, np.ndarray]:
    """(0/1 labels, rows to keep) for one CheXpert CSV."""
    keep = np.ones(len(df), dtype=bool)
    out = {}
    for column, name in FINDINGS.items():
        values = pd.to_numeric(df[column].replace("", np.nan), errors="coerce")
        bad = df[column].notna() & (df[column].astype(str).str.strip() != "") & values.isna()
        values = values.fillna(0.0)   # blank: not mentioned in the report -> negative
        bad |= ~values.isin([-1.0, 0.0, 1.0])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise LabelFileError(f"{csv}: column '{column}' holds {df[column].iloc[row]!r} (row {row + 2}); "
                                 "CheXpert labels are 1, 0, -1 or blank")
        uncertain = values == -1.0
        policy = policies[name]
        if policy == "ignore":
            keep &= ~uncertain.to_numpy()
        values = values.where(~uncertain, 1.0 if policy == "ones" else 0.0)
        out[name] = values.astype(int)
    return pd.DataFrame(out), keep


def _resolver(csv_dir: Path, first: str):
    """CSV paths start with the archive's folder name ('CheXpert-v1.0-small/train/...'): resolve
    them from the folder's parent, or from the folder itself if it was renamed when unpacked."""
    if (csv_dir.parent / first).exists() or not Path(first).parts:
        return lambda p: csv_dir.parent / p
    return lambda p: csv_dir.joinpath(*Path(p).parts[1:])


def read(manifest: dict, options: dict) -> RawData:
    policies = _policies(options)
    frames = []
    for key, split in (("train_csv", "train"), ("valid_csv", "test")):
        csv = Path(manifest[key])
        df = read_csv_checked(csv, ["Path", *FINDINGS], dtype=str, keep_default_na=False)
        if options.get("frontal_only", False) and "Frontal/Lateral" in df.columns:
            df = df[df["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)
        labels, keep = _labels(df, csv, policies)
        df, labels = df[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
        if df.empty:
            raise LabelFileError(f"{csv}: no images left after the label policy and view filter")
        resolve = _resolver(csv.parent, df["Path"].iloc[0])
        patient = df["Path"].map(lambda p: (re.search(r"(patient\d+)", p) or [""])[0])
        frames.append((split, df, labels, [str(resolve(p)) for p in df["Path"]], patient))
    table = pd.concat([label_table([s] * len(df), pat, df["Path"], lab) for s, df, lab, _, pat in frames],
                      ignore_index=True)
    paths = [p for *_, ps, _ in frames for p in ps]
    return RawData(table, list(FINDINGS.values()), "multilabel", 1, paths=paths)


register_source("chexpert", DatasetSpec(
    fetch=fetch, read=read, metrics=("map", "auroc"), primary_metric="map",
    description="CheXpert v1.0: chest radiographs, 5 findings (multi-label); official validation set as test.",
    license="Stanford University CheXpert Dataset Research Use Agreement (non-commercial research)",
    urls=(PAGE,),
    options=Settings(
        raw_data=Text("raw", doc="folder with the files put there by hand"),
        variant=Choice("small", choices=tuple(ARCHIVES), doc="the downsampled release or the full one"),
        uncertain=Table(dict(DEFAULT_UNCERTAIN), values=Choice(choices=tuple(POLICIES)), also=tuple(POLICIES),
                        doc="uncertain-label policy: one for every finding, or finding -> policy"),
        frontal_only=Bool(False, doc="only frontal views"),
    ),
), SourceInfo(
    title="CheXpert v1.0 (Stanford)", access="manual", page=PAGE,
    license="Stanford CheXpert Research Use Agreement (registration; non-commercial research)",
    split="train.csv -> train (val carved patient-wise); official valid.csv (234 images, 200 patients) -> test",
    size="small: 11 GB zip, 224,316 images; full: 439 GB", files=tuple(ARCHIVES.values()),
))
