"""BACH (ICIAR 2018 Grand Challenge on BreAst Cancer Histology, Aresta et al. 2019):
400 H&E microscopy photographs (2048x1536 TIFF), 4 classes of 100.

Source layout (``ICIAR2018_BACH_Challenge.zip`` on Zenodo)::

    ICIAR2018_BACH_Challenge/Photos/{Normal,Benign,InSitu,Invasive}/<n|b|is|iv>NNN.tif
    ICIAR2018_BACH_Challenge/WSI/...          whole-slide images (not used; not unpacked)

Split: BACH publishes no patient ids, and photographs with consecutive numbers tend to
come from the same patient. The default ``split: block`` therefore takes, per class,
the last ``test_fraction`` (default 0.1: 10 per class, the first study's 360 / 40 of Table 2)
of the files in name order as test (contiguous blocks limit
patient overlap); ``split: random`` is a stable per-image hash instead. The challenge's
own test photographs have no public labels and are not used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.registry import DatasetSpec, RawData
from medtl.settings import Choice, Number, Settings, Text
from medtl.data.sources.common import (
    LabelFileError, RemoteFile, SourceInfo, extract, hash_split, manifest_root, obtain, register_source,
    single_label_raw,
)

PAGE = "https://zenodo.org/records/3632035"
ARCHIVE = RemoteFile("ICIAR2018_BACH_Challenge.zip",
                     "https://zenodo.org/records/3632035/files/ICIAR2018_BACH_Challenge.zip?download=1",
                     md5="8ae1801334aa943c44627c1eef3631b2")
FOLDERS = {"Normal": "normal", "Benign": "benign", "InSitu": "in_situ", "Invasive": "invasive"}
CLASSES = list(FOLDERS.values())


def fetch(raw_dir: Path, options: dict) -> dict:
    root = manifest_root(options, "bach")
    if root is None:
        archive = obtain("bach", ARCHIVE, raw_dir, options, page=PAGE, single_archive=True)
        # Photos only: the whole-slide images are most of the archive's 10 GB and unused here
        root = extract(archive, Path(raw_dir) / "extracted", keep=lambda n: "/Photos/" in f"/{n}")
    photos = sorted((p for p in root.rglob("Photos") if p.is_dir()), key=lambda p: len(p.parts))
    photos = photos[0] if photos else root
    missing = [f for f in FOLDERS if not (photos / f).is_dir()]
    if missing:
        raise LabelFileError(f"{photos}: class folder(s) {missing} missing; expected {list(FOLDERS)}")
    return {"root": str(photos.resolve())}


def read(manifest: dict, options: dict) -> RawData:
    photos = Path(manifest["root"])
    fraction = float(options.get("test_fraction", 0.1))
    mode = options.get("split", "block")
    if mode not in ("block", "random"):
        raise ValueError(f"bach: option 'split' must be 'block' or 'random', got {mode!r}")
    frames = []
    for folder, name in FOLDERS.items():
        files = sorted(p for p in (photos / folder).iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise LabelFileError(f"{photos / folder}: no .tif photographs")
        ids = pd.Series([f"{folder}/{p.name}" for p in files])
        if mode == "block":
            n_test = int(round(len(files) * fraction))
            split = np.array(["train"] * (len(files) - n_test) + ["test"] * n_test)
        else:
            split = hash_split(ids, fraction)
        frames.append(pd.DataFrame({"split": split, "group": "", "image_id": ids, "label": name,
                                    "path": [str(p) for p in files]}))
    return single_label_raw(pd.concat(frames, ignore_index=True), CLASSES, 3)


register_source("bach", DatasetSpec(
    fetch=fetch, read=read, metrics=("accuracy", "kappa"), primary_metric="accuracy",
    description="BACH (ICIAR 2018) breast histology photographs, 4 classes.",
    license="CC BY-NC-ND 4.0", urls=(PAGE, ARCHIVE.url),
    options=Settings(
        raw_data=Text("raw", doc="folder with the files put there by hand"),
        test_fraction=Number(0.1, above=0, below=1, doc="fraction of each class's photographs in the test split"),
        split=Choice("block", choices=("block", "random"),
                     doc="block: the last photographs of each class (the study's 360/40); random: by hash")),
), SourceInfo(
    title="BACH, ICIAR 2018 breast cancer histology", access="automatic", page=PAGE,
    license="CC BY-NC-ND 4.0",
    split="no patient ids published: per class, the last 10 % of files in name order -> test (40 images, "
          "360 for training, as the first study's Table 2; contiguous blocks limit patient overlap); val "
          "carved from train",
    size="10.4 GB zip (photos: 400 TIFF, 100 per class; whole-slide images not unpacked)",
    files=(ARCHIVE.name,),
))
