"""TBX11K (Liu et al., CVPR 2020): 11,200 chest radiographs (512x512) for tuberculosis, with
boxes of TB areas. A detection dataset: labels are boxes, read by :func:`read_boxes`.

Source layout (``TBX11K.zip`` from the authors' page)::

    TBX11K/imgs/{health,sick,tb,test,extra}/<name>.png
    TBX11K/annotations/xml/<name>.xml     Pascal VOC: <object><name>ActiveTuberculosis</name>
                                          <bndbox><xmin>..</xmin><ymin>..</ymin><xmax>..</xmax><ymax>..</ymax></bndbox>
    TBX11K/annotations/json/...           the same boxes as COCO json (not needed)
    TBX11K/lists/TBX11K_train.txt         'tb/tb0003.png' per line (6,600 images)
    TBX11K/lists/TBX11K_val.txt           (1,800 images)

Split: the official lists (option ``lists``): TBX11K_train -> train, TBX11K_val -> val.
The official test set's labels are held by the authors' evaluation server, so it is not
read. Images without an XML (healthy, sick but not TB) are box-less rows (negatives).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.registry import DatasetSpec
from medtl.data.sources.boxes import register_boxes, validate_boxes
from medtl.data.sources.common import (
    ArchiveError, LabelFileError, RemoteFile, SourceInfo, detection_read, extract, find_file, manifest_root,
    obtain, register_source,
)

PAGE = "https://mmcheng.net/tb/"
ARCHIVE = "TBX11K.zip"
DEFAULT_LISTS = {"train": "TBX11K_train.txt", "val": "TBX11K_val.txt"}


def fetch(raw_dir: Path, options: dict) -> dict:
    root = manifest_root(options, "tbx11k")
    if root is None:
        archive = obtain("tbx11k", RemoteFile(ARCHIVE), raw_dir, options, page=PAGE,
                         why="TBX11K is distributed by its authors through cloud-drive links on the page "
                             "(no stable direct URL).", single_archive=True)
        root = extract(archive, Path(raw_dir) / "extracted", keep=lambda n: "/json/" not in n)
        where = str(archive)
    else:
        where = str(root)
    train_list = find_file(root, DEFAULT_LISTS["train"], where)
    return {"root": str(train_list.parent.parent.resolve())}


def parse_voc(xml_path: Path) -> list[tuple[str, float, float, float, float]]:
    """(class, x1, y1, x2, y2) of every object in one Pascal VOC file."""
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as err:
        raise LabelFileError(f"{xml_path}: malformed annotation XML ({err})") from None
    boxes = []
    for obj in tree.getroot().iter("object"):
        name, box = obj.findtext("name"), obj.find("bndbox")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise LabelFileError(f"{xml_path}: object '{name}' has no numeric bndbox xmin/ymin/xmax/ymax") from None
        boxes.append((str(name).strip(), *coords))
    return boxes


@register_boxes("tbx11k")
def read_boxes(manifest: dict, options: dict) -> pd.DataFrame:
    """Box table (see medtl.data.sources.boxes) of the official train and val lists."""
    root = Path(manifest["root"])
    lists = {**DEFAULT_LISTS, **(options.get("lists") or {})}
    xmls = {p.stem: p for p in (root / "annotations").rglob("*.xml")} if (root / "annotations").is_dir() else {}
    rows = []
    for split, list_name in lists.items():
        list_file = root / "lists" / list_name
        if not list_file.is_file():
            raise LabelFileError(f"{list_file}: list file is missing")
        for line in list_file.read_text().splitlines():
            rel = line.strip().split()[0] if line.strip() else ""
            if not rel:
                continue
            rel = rel[len("imgs/"):] if rel.startswith("imgs/") else rel
            image = root / "imgs" / rel
            if not image.exists():
                raise ArchiveError(f"{image}: image listed in {list_file.name} is missing")
            stem = Path(rel).stem
            boxes = parse_voc(xmls[stem]) if stem in xmls else []
            base = {"image": str(image), "image_id": rel, "split": split, "category": Path(rel).parent.name}
            if not boxes:
                rows.append({**base, "class": "", "x1": np.nan, "y1": np.nan, "x2": np.nan, "y2": np.nan})
            for cls, x1, y1, x2, y2 in boxes:
                rows.append({**base, "class": cls, "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    return validate_boxes(pd.DataFrame(rows), str(root))


register_source("tbx11k", DatasetSpec(
    fetch=fetch, read=detection_read("tbx11k", "medtl.data.sources.tbx11k"), metrics=("map",),
    primary_metric="map",
    description="TBX11K: chest radiographs with tuberculosis boxes (detection; see read_boxes).",
    license="research use as stated on the authors' page (mmcheng.net/tb)", urls=(PAGE,),
    options={"raw_data": "raw"},
), SourceInfo(
    title="TBX11K (Nankai University)", access="manual", page=PAGE,
    license="non-commercial research use as stated on the authors' page; cite Liu et al. CVPR 2020",
    split="official lists: TBX11K_train.txt (6,600) -> train, TBX11K_val.txt (1,800) -> val; test labels unpublished",
    size="11,200 PNG (512x512) + extra sets; about 3 GB", files=(ARCHIVE,), task="detection",
))
