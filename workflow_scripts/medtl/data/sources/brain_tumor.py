"""T1-weighted contrast-enhanced brain MRI (Cheng et al., PLoS ONE 2015), figshare 1512427:
3,064 slices from 233 patients, 3 tumour classes (meningioma, glioma, pituitary).

Source layout: four zips ``brainTumorDataPublic_<a>-<b>.zip`` of ``<n>.mat`` files,
MATLAB v7.3, i.e. HDF5 (read with h5py), each holding a struct ``cjdata`` with
``image`` (int16, 512x512, stored transposed by MATLAB's column-major order),
``label`` (1 meningioma, 2 glioma, 3 pituitary), ``PID`` (patient id as UTF-16 codes),
``tumorBorder`` and ``tumorMask``.

Fetch downloads the four zips from figshare, unpacks them and converts every slice once
to an 8-bit PNG (min-max scaled per slice) plus ``labels.csv``, so preparing the store
for another resolution never decodes HDF5 again.

Split: patient-wise (``PID``), a stable hash puts ``test_fraction`` (default 0.2) of the
patients in the test set; validation is carved from training patient-wise.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medtl.data.options import TEST_FRACTION
from medtl.data.registry import DatasetSpec, RawData
from medtl.settings import Settings, Text
from medtl.data.sources.common import (
    ArchiveError, LabelFileError, RemoteFile, SourceInfo, extract, hash_split, log, manifest_root,
    obtain_all, read_csv_checked, register_source, single_label_raw, write_csv_atomic,
)

PAGE = "https://doi.org/10.6084/m9.figshare.1512427"
# figshare file ids of article 1512427 (stable download links; figshare does not put the
# md5 on the link, so set options.checksums to pin them if you have them)
PARTS = (
    RemoteFile("brainTumorDataPublic_1-766.zip", "https://ndownloader.figshare.com/files/3381290"),
    RemoteFile("brainTumorDataPublic_767-1532.zip", "https://ndownloader.figshare.com/files/3381296"),
    RemoteFile("brainTumorDataPublic_1533-2298.zip", "https://ndownloader.figshare.com/files/3381293"),
    RemoteFile("brainTumorDataPublic_2299-3064.zip", "https://ndownloader.figshare.com/files/3381302"),
)
CLASSES = ["meningioma", "glioma", "pituitary"]


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("brain_tumor_mri reads MATLAB v7.3 (HDF5) files and needs h5py: pip install h5py") from None
    return h5py


def read_mat(path: Path) -> tuple[np.ndarray, int, str]:
    """(image as uint8, label 1..3, patient id) of one ``cjdata`` .mat file."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            cj = f["cjdata"]
            image = np.asarray(cj["image"], dtype=np.float64).T   # MATLAB is column-major
            label = int(np.asarray(cj["label"]).ravel()[0])
            pid = "".join(chr(int(c)) for c in np.asarray(cj["PID"]).ravel() if int(c))
    except (OSError, KeyError) as err:
        raise ArchiveError(f"{path}: not a readable MATLAB v7.3 'cjdata' file ({err})") from None
    if label not in (1, 2, 3):
        raise LabelFileError(f"{path}: cjdata.label is {label}; expected 1, 2 or 3")
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(image)
    return np.round(scaled).astype(np.uint8), label, pid.strip()


def fetch(raw_dir: Path, options: dict) -> dict:
    raw_dir = Path(raw_dir)
    labels_csv = raw_dir / "labels.csv"
    root = manifest_root(options, "brain_tumor_mri")
    if root is not None:
        mat_dirs = [root]
    else:
        zips = obtain_all("brain_tumor_mri", list(PARTS), raw_dir, options, page=PAGE)
        mat_dirs = [extract(z, raw_dir / "mat" / z.stem, keep=lambda n: n.endswith(".mat")) for z in zips]
    mats = sorted((p for d in mat_dirs for p in d.rglob("*.mat") if p.name != "cvind.mat"),
                  key=lambda p: (int(re.sub(r"\D", "", p.stem) or 0), p.name))
    if not mats:
        raise ArchiveError(f"{mat_dirs[0]}: no .mat files found")
    if labels_csv.exists() and len(pd.read_csv(labels_csv)) == len(mats):
        return {"root": str(raw_dir.resolve()), "labels": str(labels_csv.resolve()), "n": len(mats)}
    (raw_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, mat in enumerate(mats):
        image, label, pid = read_mat(mat)
        rel = f"images/{mat.stem}.png"
        Image.fromarray(image).save(raw_dir / rel)
        rows.append({"path": rel, "label": CLASSES[label - 1], "pid": pid, "source": mat.name})
        if (i + 1) % 500 == 0:
            log("brain_tumor_mri", f"converted {i + 1}/{len(mats)} slices")
    write_csv_atomic(pd.DataFrame(rows), labels_csv)   # last: a half-converted folder is never taken as done
    return {"root": str(raw_dir.resolve()), "labels": str(labels_csv.resolve()), "n": len(rows)}


def read(manifest: dict, options: dict) -> RawData:
    root = Path(manifest["root"])
    df = read_csv_checked(Path(manifest["labels"]), ["path", "label", "pid"], dtype=str, keep_default_na=False)
    df["split"] = hash_split(df["pid"], float(options.get("test_fraction", 0.2)))
    df["group"], df["image_id"] = df["pid"], df["path"]
    df["path"] = [str(root / p) for p in df["path"]]
    return single_label_raw(df, CLASSES, 1)


register_source("brain_tumor_mri", DatasetSpec(
    fetch=fetch, read=read, metrics=("accuracy", "macro_f1"), primary_metric="accuracy",
    description="T1w contrast-enhanced brain MRI (Cheng et al.), 3 tumour classes; patient-wise split.",
    license="CC BY 4.0", urls=(PAGE, *(p.url for p in PARTS)),
    options=Settings(raw_data=Text("raw", doc="folder with the files put there by hand"), test_fraction=TEST_FRACTION),
), SourceInfo(
    title="Brain tumour MRI, figshare 1512427 (Cheng et al.)", access="automatic", page=PAGE,
    license="CC BY 4.0",
    split="patient-wise (PID): test_fraction 0.2 of patients -> test by stable hash; val carved patient-wise",
    size="4 zips, 880 MB; 3,064 slices (708 meningioma, 1,426 glioma, 930 pituitary), 233 patients",
    files=tuple(p.name for p in PARTS),
))
