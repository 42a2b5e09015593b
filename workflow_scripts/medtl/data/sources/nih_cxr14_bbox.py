"""NIH ChestX-ray14 boxes (Wang et al., CVPR 2017): 984 boxes of 8 findings on 880 of the
112,120 ChestX-ray14 radiographs, drawn by a board-certified radiologist. A dense detection
source.

Source layout (NIH Clinical Center Box folder, https://nihcc.app.box.com/v/ChestXray-NIHCC)::

    BBox_List_2017.csv      Image Index, Finding Label, Bbox [x, y, w, h] (pixels of the 1024x1024
                            PNGs); the header row is malformed (the box header spans four columns
                            plus empty ones), so columns are taken by position
    images_001.tar.gz ... images_012.tar.gz     images/NNNNNNNN_NNN.png (1024x1024, 8-bit);
                            the name is <patient id>_<follow-up>

The box file has no direct link (Box serves it only through the web page), so it is a manual
step; the twelve tarballs have direct links and NIH's MD5s and are downloaded like those of
``chestxray14`` (tarballs already in ``<raw_data>/chestxray14/`` are used), and only the box
images are unpacked. ``root`` points at an unpacked copy instead: any folder holding
``BBox_List_2017.csv`` with the PNGs anywhere below it (NIH's ``images/``, Kaggle's
``images_001/images/``), or below its sub-folder ``images``; resized copies work too, as the
coordinates are kept as fractions of the 1024 px image.

Split: the box images have no official detection split; a stable hash of the patient id puts
``test_fraction`` (0.2) of the patients in test, and validation is carved patient-wise.
Every image has at least one box (no negatives).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtl.data.adapters import LabelFileError
from medtl.data.dense_registry import DETECTION, DenseDatasetSpec, DenseRaw
from medtl.data.options import LIMIT, TEST_FRACTION
from medtl.data.sources.boxes import box_raw, subset
from medtl.data.sources.chestxray14 import IMAGE_ARCHIVES, IMAGE_ARCHIVES_OPTION, PAGE, _archives
from medtl.data.sources.common import (
    ArchiveError, RemoteFile, SourceInfo, extract, find_file, hash_split, index_images, log, manifest_root,
    obtain_all, register_dense_source,
)
from medtl.settings import Settings, Text

BBOX_FILE = RemoteFile("BBox_List_2017.csv")
CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"]
SOURCE_SIZE = 1024   # every ChestX-ray14 PNG is 1024 x 1024, the space of the box coordinates
OPTIONS = Settings(
    raw_data=Text("raw", doc="folder with the files put there by hand"),
    image_archives=IMAGE_ARCHIVES_OPTION,
    images=Text(".", doc="with root: the folder of the PNGs, relative to root"),
    test_fraction=TEST_FRACTION,
    limit=LIMIT,
)


def read_bbox_csv(csv: Path) -> pd.DataFrame:
    """``BBox_List_2017.csv`` -> image_id, class, x1, y1, x2, y2 (pixels of the 1024 px image)."""
    try:
        raw = pd.read_csv(csv, header=None, skiprows=1, usecols=range(6), dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise LabelFileError(f"{csv}: box file is missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise LabelFileError(f"{csv}: malformed box file ({err})") from None
    raw.columns = ["image", "class", "x", "y", "w", "h"]
    xywh = raw[["x", "y", "w", "h"]].apply(pd.to_numeric, errors="coerce")
    bad = xywh.isna().any(axis=1)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise LabelFileError(f"{csv}: data row {i + 1} ({raw.iloc[i]['image']}) has a non-numeric box "
                             f"{raw.iloc[i][['x', 'y', 'w', 'h']].tolist()}")
    unknown = sorted(set(raw["class"].str.strip()) - set(CLASSES))
    if unknown:
        raise LabelFileError(f"{csv}: unknown finding(s) {unknown}; the box list has {CLASSES}")
    return pd.DataFrame({"image_id": raw["image"].str.strip(), "class": raw["class"].str.strip(),
                         "x1": xywh["x"], "y1": xywh["y"], "x2": xywh["x"] + xywh["w"], "y2": xywh["y"] + xywh["h"]})


def fetch(raw_dir: Path, options: dict) -> dict:
    raw_dir = Path(raw_dir)
    root = manifest_root(options, "nih_cxr14_bbox")
    if root is not None:
        csv = find_file(root, BBOX_FILE.name, f"nih_cxr14_bbox: option 'root' ({root})")
        images = (root / options.get("images", ".")).resolve()
        if not images.is_dir():
            raise FileNotFoundError(f"nih_cxr14_bbox: option 'images' is {images}, which is not a folder")
        return {"bbox_csv": str(csv.resolve()), "image_dirs": [str(images)], "complete": True}
    archives = _archives(options)
    # the box file first: obtain_all fails on a missing manual file before any tarball is fetched
    paths = obtain_all("nih_cxr14_bbox", [BBOX_FILE, *archives], raw_dir, options, page=PAGE,
                       why="NIH serves the box file only through the Box web page (no direct link).",
                       folders=("chestxray14",))
    wanted = set(read_bbox_csv(paths[0])["image_id"])
    image_dirs = [str(extract(p, raw_dir / "extracted" / p.name.split(".")[0],
                              keep=lambda n: Path(n).name in wanted, allow_empty=True)) for p in paths[1:]]
    return {"bbox_csv": str(paths[0].resolve()), "image_dirs": image_dirs,
            "complete": len(archives) == len(IMAGE_ARCHIVES)}


def read_detection(manifest: dict, options: dict) -> DenseRaw:
    options = {**OPTIONS, **options}
    csv = Path(manifest["bbox_csv"])
    boxes = read_bbox_csv(csv)
    files = index_images([Path(d) for d in manifest["image_dirs"]], [".png"])
    names = list(dict.fromkeys(boxes["image_id"]))
    present = [n for n in names if Path(n).stem in files]
    if len(present) < len(names):
        absent = [n for n in names if Path(n).stem not in files]
        if manifest.get("complete", True):
            raise ArchiveError(f"{len(absent)} image(s) of {csv.name} are in none of {manifest['image_dirs']}, "
                               f"e.g. {absent[0]}")
        log("nih_cxr14_bbox", f"using {len(present)} of {len(names)} box images (subset of image archives)")
    patients = pd.Series([n.split("_")[0] for n in present], dtype=str)
    images = pd.DataFrame({"image_id": present, "image": [files[Path(n).stem] for n in present],
                           "group": patients, "split": hash_split(patients, float(options["test_fraction"])),
                           "width": SOURCE_SIZE, "height": SOURCE_SIZE})
    return box_raw(subset(images, options.get("limit")), boxes, CLASSES, str(csv))


register_dense_source("nih_cxr14_bbox", DenseDatasetSpec(
    fetch=fetch, readers={DETECTION: read_detection},
    description="NIH ChestX-ray14 boxes: 984 radiologist boxes of 8 findings on 880 radiographs; patient-wise split.",
    license="No restriction (NIH Clinical Center); cite Wang et al. CVPR 2017 and acknowledge the NIH CC",
    urls=(PAGE, *(a.url for a in IMAGE_ARCHIVES)),
    options=OPTIONS,
), SourceInfo(
    title="NIH ChestX-ray14 bounding boxes", access="automatic (images) + manual (BBox_List_2017.csv)", page=PAGE,
    license="unrestricted use with citation of Wang et al. (CVPR 2017) and acknowledgement of the NIH CC",
    split="no official detection split: patient-wise hash, test_fraction 0.2 of the patients -> test",
    size="984 boxes on 880 of the 112,120 images (1024x1024 PNG); the 12 tarballs are 45 GB, only the 880 are unpacked",
    files=(BBOX_FILE.name, *(a.name for a in IMAGE_ARCHIVES)), task="detection",
))
