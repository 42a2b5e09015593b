"""TBX11K (Liu et al., CVPR 2020): 11,200 chest radiographs (512x512) for tuberculosis, with
boxes of TB areas. A dense detection source.

Source layout (``TBX11K.zip`` from the authors' page)::

    TBX11K/imgs/{health,sick,tb,test,extra}/<name>.png
    TBX11K/annotations/xml/<name>.xml     Pascal VOC, one per TB image: <size> and one <object> per box,
                                          <name> ActiveTuberculosis / ObsoletePulmonaryTuberculosis /
                                          PulmonaryTuberculosis (TB of unknown activity)
    TBX11K/annotations/json/...           the same boxes as COCO json (not needed)
    TBX11K/lists/TBX11K_train.txt         'tb/tb0003.png' per line (6,600 images)
    TBX11K/lists/TBX11K_val.txt           (1,800 images)

Split: the official lists (option ``lists``): TBX11K_train -> train (validation carved from it
image-wise: no patient ids), TBX11K_val -> **test**. The official test set's labels are held by
the authors' evaluation server, so papers without it report on the val list, as here. Healthy and
sick-but-not-TB images have no XML: they are negatives.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.adapters import LabelFileError
from medtl.data.dense_registry import DETECTION, DenseDatasetSpec, DenseRaw
from medtl.data.imageio import image_size
from medtl.data.options import LIMIT
from medtl.data.sources.boxes import box_raw, subset
from medtl.data.sources.common import (
    ArchiveError, RemoteFile, SourceInfo, locate_unpacked, merge_dict_option, register_dense_source,
)
from medtl.settings import Settings, Table, Text, TextList

PAGE = "https://mmcheng.net/tb/"
ARCHIVE = "TBX11K.zip"
LISTS = {"train": "TBX11K_train.txt", "test": "TBX11K_val.txt"}
CLASSES = ["ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis"]
WHY = ("TBX11K is distributed by its authors through cloud-drive links on that page (no stable direct URL). "
       "Its folders imgs/, annotations/xml/ and lists/ may also be put there unpacked.")


def fetch(raw_dir: Path, options: dict) -> dict:
    train_list = locate_unpacked("tbx11k", RemoteFile(ARCHIVE), LISTS["train"], raw_dir, options, page=PAGE,
                                 why=WHY, keep=lambda n: "/json/" not in n)
    return {"root": str(train_list.parent.parent.resolve())}


def parse_voc(xml_path: Path) -> tuple[tuple[int, int] | None, list[tuple[str, float, float, float, float]]]:
    """((width, height) or None, [(class, x1, y1, x2, y2)]) of one Pascal VOC file."""
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as err:
        raise LabelFileError(f"{xml_path}: malformed annotation XML ({err})") from None
    size = tree.getroot().find("size")
    try:
        wh = (int(float(size.findtext("width"))), int(float(size.findtext("height")))) if size is not None else None
    except (TypeError, ValueError):
        wh = None
    boxes = []
    for obj in tree.getroot().iter("object"):
        name, box = obj.findtext("name"), obj.find("bndbox")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise LabelFileError(f"{xml_path}: object '{name}' has no numeric bndbox xmin/ymin/xmax/ymax") from None
        boxes.append((str(name).strip(), *coords))
    return wh, boxes


def read_detection(manifest: dict, options: dict) -> DenseRaw:
    root = Path(manifest["root"])
    lists = merge_dict_option(options, "lists", LISTS)
    classes = list(options.get("classes") or CLASSES)
    xmls = {p.stem: p for p in (root / "annotations").rglob("*.xml")} if (root / "annotations").is_dir() else {}
    images = []
    for split, list_name in lists.items():
        list_file = root / "lists" / list_name
        if not list_file.is_file():
            raise LabelFileError(f"{list_file}: list file is missing")
        for line in list_file.read_text().splitlines():
            rel = line.strip().split()[0] if line.strip() else ""
            if rel:
                rel = rel[len("imgs/"):] if rel.startswith("imgs/") else rel
                images.append({"image_id": rel, "split": split, "image": root / "imgs" / rel})
    images = subset(pd.DataFrame(images), options.get("limit"))
    sizes, boxes = [], []
    for image_id, image in zip(images["image_id"], images["image"]):
        if not image.exists():
            raise ArchiveError(f"{image}: image listed in {root / 'lists'} is missing")
        xml = xmls.get(Path(image_id).stem)
        wh, found = parse_voc(xml) if xml is not None else (None, [])
        sizes.append(wh or image_size(image))   # box coordinates are in the XML's <size>
        boxes += [{"image_id": image_id, "class": c, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
                  for c, x1, y1, x2, y2 in found]
    sizes = np.array(sizes, dtype=np.float64).reshape(-1, 2)
    boxes = pd.DataFrame(boxes, columns=["image_id", "class", "x1", "y1", "x2", "y2"])
    return box_raw(images.assign(group="", width=sizes[:, 0], height=sizes[:, 1]), boxes, classes, str(root))


register_dense_source("tbx11k", DenseDatasetSpec(
    fetch=fetch, readers={DETECTION: read_detection},
    description="TBX11K: chest radiographs with tuberculosis boxes; official train list, val list as test.",
    license="research use as stated on the authors' page (mmcheng.net/tb)", urls=(PAGE,),
    options=Settings(
        raw_data=Text("raw", doc="folder with the files put there by hand"),
        lists=Table(dict(LISTS), values=Text(), doc="split (train, val, test) -> its list file in lists/; "
                                                    "a split not named keeps its default"),
        classes=TextList(list(CLASSES), doc="the box classes, in order; a box of a class not listed stops the read"),
        limit=LIMIT,
    ),
), SourceInfo(
    title="TBX11K (Nankai University)", access="manual", page=PAGE,
    license="non-commercial research use as stated on the authors' page; cite Liu et al. CVPR 2020",
    split="official lists: TBX11K_train.txt (6,600) -> train, TBX11K_val.txt (1,800) -> test; test labels unpublished",
    size="11,200 PNG (512x512) + extra sets; about 3 GB", files=(ARCHIVE,), task="detection",
))
