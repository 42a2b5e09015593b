"""HAM10000 (Tschandl et al., Sci Data 2018): 10,015 dermoscopic images of 7,470 lesions,
7 diagnostic classes.

Source layout (Harvard Dataverse doi:10.7910/DVN/DBW86T)::

    HAM10000_metadata.csv           lesion_id, image_id, dx, dx_type, age, sex, localization
    HAM10000_images_part_1.zip      ISIC_NNNNNNN.jpg (5,000)
    HAM10000_images_part_2.zip      ISIC_NNNNNNN.jpg (5,015)

Download: the Dataverse API lists the dataset's files with their ids and MD5s; each is
downloaded from ``/api/access/datafile/<id>`` (``format=original`` so the metadata comes
back as the CSV that was uploaded) and checked against its MD5. Files already in
``<raw_data>/ham10000/`` (e.g. from the Kaggle mirror) are used as they are.

Split: HAM10000 has no patient ids; images of the same lesion (``lesion_id``) are kept
together: a stable hash puts ``test_fraction`` (default 0.2) of the lesions in the test
set, and validation is carved lesion-wise.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medtl.data.download import ChecksumError, DownloadError, download
from medtl.data.options import TEST_FRACTION
from medtl.data.registry import DatasetSpec, RawData
from medtl.settings import Settings, Text
from medtl.data.sources.common import (
    ArchiveError, LabelFileError, ManualDownloadError, RemoteFile, SourceInfo, extract, hash_split,
    index_images, local_candidates, manifest_root, obtain_all, read_csv_checked, register_source,
    single_label_raw,
)

DOI = "doi:10.7910/DVN/DBW86T"
PAGE = "https://doi.org/10.7910/DVN/DBW86T"
SERVER = "https://dataverse.harvard.edu"
METADATA = "HAM10000_metadata.csv"
IMAGE_ZIPS = ["HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip"]
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def dataverse_files(server: str, doi: str, raw_dir: Path, names: list[str]) -> list[RemoteFile]:
    """RemoteFile (download URL, MD5) of each wanted file, from the Dataverse dataset listing."""
    listing = download(f"{server.rstrip('/')}/api/datasets/:persistentId/?persistentId={doi}",
                       Path(raw_dir) / "downloads" / "dataverse_listing.json", retries=2)
    try:
        files = json.loads(listing.read_text())["data"]["latestVersion"]["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        listing.unlink(missing_ok=True)
        raise DownloadError(f"{server}: unexpected Dataverse listing for {doi} ({err})") from None
    by_stem = {}
    for f in files:
        df = f.get("dataFile", {})
        original = df.get("originalFileName") or df.get("filename", "")
        checksum = df.get("checksum") or {}
        md5 = df.get("md5") or (checksum.get("value") if str(checksum.get("type", "")).upper() == "MD5" else None)
        query = "?format=original" if df.get("originalFileName") else ""
        by_stem[Path(original).stem] = (f"{server.rstrip('/')}/api/access/datafile/{df.get('id')}{query}", md5)
    out = []
    for name in names:
        if Path(name).stem not in by_stem:
            raise DownloadError(f"{server}: Dataverse dataset {doi} has no file '{name}'")
        url, md5 = by_stem[Path(name).stem]
        out.append(RemoteFile(name, url, md5=md5))
    return out


def fetch(raw_dir: Path, options: dict) -> dict:
    raw_dir = Path(raw_dir)
    root = manifest_root(options, "ham10000")
    names = [METADATA] + ([] if root else IMAGE_ZIPS)
    remotes = [RemoteFile(n) for n in names]
    local = all(any(p.is_file() for p in local_candidates("ham10000", r, options)) for r in remotes)
    if not local:
        try:
            remotes = dataverse_files(options.get("dataverse_server", SERVER), DOI, raw_dir, names)
        except DownloadError as err:
            raise ManualDownloadError(
                f"dataset 'ham10000': the automatic download from Harvard Dataverse failed ({err}). Get "
                f"{', '.join(repr(n) for n in names)} from {PAGE} and put them in "
                f"{local_candidates('ham10000', remotes[0], options)[0].parent.resolve()}/, then run again.") from None
    try:
        paths = obtain_all("ham10000", remotes, raw_dir, options, page=PAGE)
    except DownloadError as err:
        if isinstance(err, ChecksumError):
            raise
        folder = local_candidates("ham10000", remotes[0], options)[0].parent.resolve()
        raise ManualDownloadError(f"dataset 'ham10000': download failed ({err}); get the files from {PAGE} and "
                                  f"put them in {folder}/") from None
    image_dirs = [str(root)] if root else [str(extract(p, raw_dir / "extracted" / p.stem,
                                                       keep=lambda n: n.lower().endswith(".jpg")))
                                           for p in paths[1:]]
    return {"metadata": str(paths[0].resolve()), "image_dirs": image_dirs}


def read(manifest: dict, options: dict) -> RawData:
    meta_csv = Path(manifest["metadata"])
    # sep=None sniffs comma (the uploaded CSV, Kaggle) or tab (a Dataverse .tab export)
    meta = read_csv_checked(meta_csv, ["lesion_id", "image_id", "dx"], sep=None, engine="python", dtype=str,
                            keep_default_na=False)
    unknown = sorted(set(meta["dx"]) - set(CLASSES))
    if unknown:
        raise LabelFileError(f"{meta_csv}: column 'dx' has classes {unknown} outside {CLASSES}")
    images = index_images([Path(d) for d in manifest["image_dirs"]], [".jpg", ".jpeg"])
    absent = [i for i in meta["image_id"] if i not in images]
    if absent:
        raise ArchiveError(f"{len(absent)} image(s) of {meta_csv.name} are in neither image archive, "
                           f"e.g. {absent[0]}.jpg")
    df = pd.DataFrame({"split": hash_split(meta["lesion_id"], float(options.get("test_fraction", 0.2))),
                       "group": meta["lesion_id"], "image_id": meta["image_id"], "label": meta["dx"],
                       "path": [str(images[i]) for i in meta["image_id"]]})
    return single_label_raw(df, CLASSES, 3)


register_source("ham10000", DatasetSpec(
    fetch=fetch, read=read, metrics=("accuracy", "macro_f1"), primary_metric="accuracy",
    description="HAM10000 dermoscopy, 7 classes; lesion-wise split.",
    license="CC BY-NC 4.0", urls=(PAGE,),
    options=Settings(raw_data=Text("raw", doc="folder with the files put there by hand"), test_fraction=TEST_FRACTION,
                     dataverse_server=Text(SERVER, doc="the Dataverse server the files are listed from")),
), SourceInfo(
    title="HAM10000 (Harvard Dataverse)", access="automatic", page=PAGE, license="CC BY-NC 4.0",
    split="lesion-wise (lesion_id; no patient ids published): 20 % of lesions -> test by stable hash; "
          "val carved lesion-wise",
    size="2 zips, 2.6 GB; 10,015 images, 7,470 lesions (nv 6,705, mel 1,113, bkl 1,099, bcc 514, akiec 327, "
         "vasc 142, df 115)",
    files=(METADATA, *IMAGE_ZIPS),
))
