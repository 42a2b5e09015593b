"""NIH ChestX-ray14 (Wang et al., CVPR 2017): 112,120 frontal chest radiographs of 30,805
patients, 14 findings from report mining (multi-label).

Source layout (NIH Clinical Center Box folder)::

    Data_Entry_2017_v2020.csv     Image Index, Finding Labels ('Effusion|Mass' or 'No Finding'),
                                  Follow-up #, Patient ID, Patient Age, Patient Gender, View Position, ...
    train_val_list.txt            official train+val image names (one per line)
    test_list.txt                 official test image names (patient-disjoint from train_val)
    images_001.tar.gz ... images_012.tar.gz     images/NNNNNNNN_NNN.png (1024x1024, 8-bit)
    BBox_List_2017.csv            984 boxes of 8 findings on 880 images (the dense source nih_cxr14_bbox)

The twelve image tarballs have stable direct links and published MD5s and are
downloaded automatically (option ``image_archives`` picks a subset, e.g. ``[1]`` for a
quick trial; images of other archives are then left out). The three label files have no
direct link: Box serves them only through its web page, so they are a manual step.

Split: the official patient-wise split: train_val_list -> train (validation carved from
it patient-wise by the prepare step), test_list -> test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.registry import DatasetSpec, RawData
from medtl.data.sources.common import (
    ArchiveError, LabelFileError, RemoteFile, SourceInfo, extract, index_images, label_table, log,
    manifest_root, obtain_all, read_csv_checked, register_source,
)
from medtl.settings import IntList, Settings, Text

PAGE = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
LABEL_FILES = [RemoteFile("Data_Entry_2017_v2020.csv"), RemoteFile("train_val_list.txt"),
               RemoteFile("test_list.txt")]
# Direct links from NIH's batch_download_zips.py; MD5s from the 'MD5 checksums' file in the same Box folder.
_LINKS = [
    ("vfk49d74nhbxq3nqjg0900w5nvkorp5c", "fe8ed0a6961412fddcbb3603c11b3698"),
    ("i28rlmbvmfjbl8p2n3ril0pptcmcu9d1", "ab07a2d7cbe6f65ddd97b4ed7bde10bf"),
    ("f1t00wrtdk94satdfb9olcolqx20z2jp", "2301d03bde4c246388bad3876965d574"),
    ("0aowwzs5lhjrceb3qp67ahp0rd1l1etg", "9f1b7f5aae01b13f4bc8e2c44a4b8ef6"),
    ("v5e3goj22zr6h8tzualxfsqlqaygfbsn", "1861f3cd0ef7734df8104f2b0309023b"),
    ("asi7ikud9jwnkrnkj99jnpfkjdes7l6l", "456b53a8b351afd92a35bc41444c58c8"),
    ("jn1b4mw4n6lnh74ovmcjb8y48h8xj07n", "1075121ea20a137b87f290d6a4a5965e"),
    ("tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j", "b61f34cec3aa69f295fbb593cbd9d443"),
    ("upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj", "442a3caa61ae9b64e61c561294d1e183"),
    ("l6nilvfa9cg3s28tqv1qc1olm3gnz54p", "09ec81c4c31e32858ad8cf965c494b74"),
    ("hhq8fkdgvcari67vfhs7ppg2w6ni4jze", "499aefc67207a5a97692424cf5dbeed5"),
    ("ioqwiy20ihqwyr8pf4c24eazhh281pbu", "dc9fda1757c2de0032b63347a7d2895c"),
]
IMAGE_ARCHIVES = [RemoteFile(f"images_{i:03d}.tar.gz", f"https://nihcc.box.com/shared/static/{key}.gz", md5=md5)
                  for i, (key, md5) in enumerate(_LINKS, start=1)]
FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
CLASSES = [f.lower() for f in FINDINGS]
#: the option picking image tarballs (also that of ``nih_cxr14_bbox``, which takes its images from them)
IMAGE_ARCHIVES_OPTION = IntList(list(range(1, 13)), minimum=1, maximum=12,
                                doc="numbers of the image tarballs to use (e.g. [1] for a quick trial); "
                                    "images of the others are left out")


def _archives(options: dict) -> list[RemoteFile]:
    chosen = options.get("image_archives") or list(range(1, 13))
    bad = [i for i in chosen if not isinstance(i, int) or not 1 <= i <= 12]
    if bad:
        raise ValueError(f"chestxray14: option 'image_archives' takes numbers 1-12, got {bad}")
    return [IMAGE_ARCHIVES[i - 1] for i in sorted(set(chosen))]


def fetch(raw_dir: Path, options: dict) -> dict:
    raw_dir = Path(raw_dir)
    root = manifest_root(options, "chestxray14")
    archives = [] if root else _archives(options)
    # label files first: obtain_all fails on a missing manual file before any tarball is fetched
    paths = obtain_all("chestxray14", LABEL_FILES + archives, raw_dir, options, page=PAGE,
                       why="NIH serves the label files only through the Box web page (no direct link).")
    image_dirs = [str(root)] if root else [
        str(extract(p, raw_dir / "extracted" / p.name.split(".")[0], keep=lambda n: n.endswith(".png")))
        for p in paths[len(LABEL_FILES):]]
    complete = root is not None or len(archives) == len(IMAGE_ARCHIVES)
    return {"data_entry": str(paths[0].resolve()), "train_val_list": str(paths[1].resolve()),
            "test_list": str(paths[2].resolve()), "image_dirs": image_dirs, "complete": complete}


def _names(path: Path) -> set[str]:
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except UnicodeDecodeError as err:
        raise LabelFileError(f"{path}: malformed list file ({err})") from None


def read(manifest: dict, options: dict) -> RawData:
    entry_csv = Path(manifest["data_entry"])
    df = read_csv_checked(entry_csv, ["Image Index", "Finding Labels", "Patient ID"], dtype=str,
                          keep_default_na=False)
    train, test = _names(Path(manifest["train_val_list"])), _names(Path(manifest["test_list"]))
    both = train & test
    if both:
        raise LabelFileError(f"{manifest['test_list']}: {len(both)} image(s) also in train_val_list, "
                             f"e.g. {sorted(both)[0]}")
    findings = df["Finding Labels"].str.split("|")
    unknown = sorted({f for fs in findings for f in fs} - set(FINDINGS) - {"No Finding"})
    if unknown:
        raise LabelFileError(f"{entry_csv}: unknown finding(s) {unknown} in 'Finding Labels'")
    df["split"] = np.where(df["Image Index"].isin(test), "test",
                           np.where(df["Image Index"].isin(train), "train", ""))
    df = df[df["split"] != ""].reset_index(drop=True)
    images = index_images([Path(d) for d in manifest["image_dirs"]], [".png"])
    present = df["Image Index"].map(lambda n: Path(n).stem in images)
    if not present.all():
        if manifest.get("complete", True):
            missing = df.loc[~present, "Image Index"]
            raise ArchiveError(f"{len(missing)} image(s) listed in {entry_csv.name} are in no image archive, "
                               f"e.g. {missing.iloc[0]}")
        log("chestxray14", f"using {int(present.sum())} of {len(df)} images (subset of image archives)")
        df = df[present].reset_index(drop=True)
    findings = df["Finding Labels"].str.split("|")
    labels = pd.DataFrame({c: findings.map(lambda fs, f=f: int(f in fs)) for f, c in zip(FINDINGS, CLASSES)})
    table = label_table(df["split"], df["Patient ID"], df["Image Index"], labels)
    return RawData(table, list(CLASSES), "multilabel", 1,
                   paths=[str(images[Path(n).stem]) for n in df["Image Index"]])


register_source("chestxray14", DatasetSpec(
    fetch=fetch, read=read, metrics=("auroc", "map"), primary_metric="auroc",
    description="NIH ChestX-ray14: frontal chest radiographs, 14 findings (multi-label); official split.",
    license="No restriction (NIH Clinical Center); cite Wang et al. CVPR 2017 and acknowledge the NIH CC",
    urls=(PAGE, *(a.url for a in IMAGE_ARCHIVES)),
    options=Settings(
        raw_data=Text("raw", doc="folder with the files put there by hand"),
        image_archives=IMAGE_ARCHIVES_OPTION,
    ),
), SourceInfo(
    title="NIH ChestX-ray14", access="automatic (images) + manual (3 label files)", page=PAGE,
    license="unrestricted use with citation of Wang et al. (CVPR 2017) and acknowledgement of the NIH CC",
    split="official patient-wise split: train_val_list.txt -> train (val carved patient-wise), test_list.txt -> test",
    size="12 tarballs, 45 GB; 112,120 images (86,524 train+val / 25,596 test), 30,805 patients",
    files=tuple(f.name for f in LABEL_FILES) + tuple(a.name for a in IMAGE_ARCHIVES),
))
