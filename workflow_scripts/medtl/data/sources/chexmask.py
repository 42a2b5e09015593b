"""CheXmask (Gaggion et al., Sci Data 2024): heart, left-lung and right-lung masks of the
radiographs of five public chest X-ray sets, drawn by HybridGNet and quality-checked per image
(reverse classification accuracy, RCA). A dense segmentation source: the study's "lungs and heart
on VinDr-CXR" are CheXmask's VinDr-CXR masks on VinDr-CXR's own images (``images: vindr_cxr``, the
default); ``images: chestxray14`` pairs its ChestX-ray14 masks with the NIH images instead.

Source layout (PhysioNet, open access, ``chexmask-cxr-segmentation-data/1.0.0``)::

    OriginalResolution/VinDr-CXR.csv[.gz]     one row per image: image_id, Dice RCA (Mean),
    OriginalResolution/ChestX-Ray8.csv[.gz]   Dice RCA (Max), Landmarks, Left Lung, Right Lung,
                                              Heart (run-length encoded), Height, Width
    Preprocessed/...                          the same at 1024 x 1024 after padding (not used:
                                              it is not aligned with the original images)
    SHA256SUMS.txt                            PhysioNet's checksum of every file

The masks' file is downloaded after SHA256SUMS.txt and checked against it; the images are not in
CheXmask and come from their own source (VinDr-CXR: credentialed, see ``vindr_cxr``).

RLE: space-separated (start, length) pairs, starts 1-based, over the mask flattened row by row
(C order) at Height x Width, the original image's size (CheXmask's ``get_mask_from_RLE``).
Quality: rows with ``Dice RCA (Mean)`` below ``min_dice_rca`` (0.7, the threshold CheXmask's
README recommends) are left out. "Left" and "right" are the patient's, as CheXmask names them.

Split: VinDr-CXR's official one (its train/ and test/ folders), validation carved image-wise;
ChestX-ray14: NIH's ``test_list.txt`` if given as ``test_list``, else a patient-wise hash.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.adapters import IMAGE_SUFFIXES, LabelFileError
from medtl.data.dense_registry import SEGMENTATION, DenseDatasetSpec, DenseRaw
from medtl.data.dense_adapters import _subset
from medtl.data.download import DownloadError, download
from medtl.data.imageio import DICOM_SUFFIXES
from medtl.data.options import LIMIT
from medtl.data.sources import vindr_cxr
from medtl.data.sources.common import (
    ManualDownloadError, RemoteFile, SourceInfo, hash_split, index_images, local_candidates, log, obtain,
    register_dense_source,
)
from medtl.settings import Choice, Number, Settings, Text

PAGE = "https://physionet.org/content/chexmask-cxr-segmentation-data/1.0.0/"
FILES_URL = "https://physionet.org/files/chexmask-cxr-segmentation-data/1.0.0/"
SUMS = "SHA256SUMS.txt"
MASK_TABLES = {"vindr_cxr": "VinDr-CXR", "chestxray14": "ChestX-Ray8"}
STRUCTURES = {"heart": "Heart", "left_lung": "Left Lung", "right_lung": "Right Lung"}
QUALITY = "Dice RCA (Mean)"
OPTIONS = Settings(
    raw_data=Text("raw", doc="folder with the files put there by hand"),
    images=Choice("vindr_cxr", choices=tuple(MASK_TABLES), doc="whose images and masks: VinDr-CXR's or ChestX-ray14's"),
    min_dice_rca=Number(0.7, minimum=0, maximum=1,
                        doc="rows with a lower Dice RCA (Mean) are left out (0: keep every row)"),
    csv=Text(None, nullable=True, doc="path of the mask table put elsewhere (then nothing is downloaded)"),
    image_root=Text(None, nullable=True, doc="folder of the images (needed with images: chestxray14)"),
    test_list=Text(None, nullable=True, doc="NIH's test_list.txt (with images: chestxray14): its images -> test"),
    test_fraction=Number(0.2, above=0, below=1,
                         doc="fraction of patients drawn into test (with images: chestxray14, without test_list)"),
    id_column=Text(None, nullable=True, doc="the mask table's image id column (default: its first)"),
    resolution=Text("OriginalResolution", doc="PhysioNet folder of the mask table (Preprocessed masks do not "
                                              "overlay the original images)"),
    base_url=Text(FILES_URL, doc="where the mask table and SHA256SUMS.txt are downloaded from"),
    limit=LIMIT,
)


@dataclass(frozen=True)
class RleMask:
    """One CheXmask mask, kept encoded until the prepare step decodes it (a :class:`MaskArray`)."""
    rle: str
    height: int
    width: int
    where: str = ""

    def array(self) -> np.ndarray:
        return decode_rle(self.rle, self.height, self.width, self.where)


def decode_rle(rle: str, height: int, width: int, where: str = "") -> np.ndarray:
    """uint8 (height, width) 0/1 mask of a CheXmask RLE string (see the module's documentation)."""
    try:
        runs = np.asarray(rle.split(), dtype=np.int64)
    except ValueError:
        raise LabelFileError(f"{where}: run-length mask holds a non-integer") from None
    if len(runs) % 2:
        raise LabelFileError(f"{where}: run-length mask has an odd number of values ({len(runs)})")
    starts, lengths = runs[0::2] - 1, runs[1::2]
    ends = starts + lengths
    n = height * width
    if len(runs) and (starts.min() < 0 or lengths.min() < 0 or ends.max() > n):
        raise LabelFileError(f"{where}: run-length mask runs outside its {height} x {width} pixels")
    delta = np.zeros(n + 1, np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    return (np.cumsum(delta[:n]) > 0).astype(np.uint8).reshape(height, width)


def _mask_table(raw_dir: Path, options: dict) -> Path:
    """CheXmask's CSV for the chosen images: given, put by hand, or downloaded and checked."""
    stem = MASK_TABLES[options["images"]]
    if options.get("csv"):
        path = Path(options["csv"]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"chexmask: option 'csv' is {path}, which is not a file")
        return path
    names = [f"{stem}.csv", f"{stem}.csv.gz"]
    for name in names:
        local = local_candidates("chexmask", RemoteFile(name), options)[0]
        if local.is_file():
            return obtain("chexmask", RemoteFile(name), raw_dir, options, page=PAGE)
    folder = local_candidates("chexmask", RemoteFile(names[0]), options)[0].parent.resolve()
    base = options.get("base_url", FILES_URL).rstrip("/") + "/"
    manual = (f"Get {options['resolution']}/{names[0]} (or {names[1]}) from {PAGE} and put it in {folder}/, "
              "or set the option 'csv' to its path; then run the workflow again.")
    try:
        sums = download(base + SUMS, Path(raw_dir) / "downloads" / SUMS, retries=int(options.get("retries", 4)),
                        backoff=float(options.get("backoff", 2.0)))
    except DownloadError as err:
        raise ManualDownloadError(f"dataset 'chexmask': PhysioNet's file list could not be fetched ({err}). "
                                  + manual) from None
    listing = sums.read_text().splitlines()
    sums.unlink()   # read once per fetch: a kept copy would never see a corrected list
    wanted = {f"{options['resolution']}/{n}".lower() for n in names}
    for line in listing:
        digest, _, rel = line.strip().partition(" ")
        rel = rel.strip().lstrip("*")
        if rel.lower() in wanted:
            remote = RemoteFile(Path(rel).name, url=base + rel, sha256=digest)
            return obtain("chexmask", remote, raw_dir, options, page=PAGE)
    raise ManualDownloadError(f"dataset 'chexmask': {base + SUMS} lists no {' or '.join(sorted(wanted))}. " + manual)


def fetch(raw_dir: Path, options: dict) -> dict:
    options = {**OPTIONS, **options}
    if options["images"] not in MASK_TABLES:
        raise ValueError(f"chexmask: option 'images' is one of {sorted(MASK_TABLES)}, got {options['images']!r}")
    table = _mask_table(Path(raw_dir), options)
    if options.get("image_root"):
        image_root = Path(options["image_root"]).expanduser().resolve()
        if not image_root.is_dir():
            raise FileNotFoundError(f"chexmask: option 'image_root' is {image_root}, which is not a folder")
    elif options["images"] == "vindr_cxr":
        image_root = vindr_cxr.locate(Path(raw_dir) / "vindr_cxr", {"raw_data": options.get("raw_data")})
    else:
        raise ValueError("chexmask with images: chestxray14 needs the option 'image_root': the folder of the "
                         "ChestX-ray14 PNGs (e.g. the unpacked images_*.tar.gz, see the 'chestxray14' dataset)")
    return {"csv": str(table.resolve()), "images": options["images"], "image_root": str(image_root)}


def _vindr_images(root: Path) -> pd.DataFrame:
    rows = []
    for split in ("train", "test"):
        folder = root / split
        if folder.is_dir():
            rows += [{"stem": p.stem, "image": str(p), "split": split, "group": ""} for p in sorted(folder.iterdir())
                     if p.suffix.lower() in DICOM_SUFFIXES | IMAGE_SUFFIXES]
    return pd.DataFrame(rows, columns=["stem", "image", "split", "group"])


def _nih_images(root: Path, options: dict) -> pd.DataFrame:
    files = index_images(root, IMAGE_SUFFIXES)
    stems = pd.Series(sorted(files), dtype=str)
    groups = stems.str.split("_").str[0]
    if options.get("test_list"):
        test = {Path(line.strip()).stem for line in Path(options["test_list"]).read_text().splitlines() if line.strip()}
        split = np.where(stems.isin(test), "test", "train")
    else:
        split = hash_split(groups, float(options["test_fraction"]))
    return pd.DataFrame({"stem": stems, "image": [str(files[s]) for s in stems], "split": split, "group": groups})


def read_segmentation(manifest: dict, options: dict) -> DenseRaw:
    options = {**OPTIONS, **options}
    csv, root = Path(manifest["csv"]), Path(manifest["image_root"])
    images = _vindr_images(root) if manifest["images"] == "vindr_cxr" else _nih_images(root, options)
    if images.empty:
        raise LabelFileError(f"{root}: no images found for CheXmask's {manifest['images']} masks")
    by_stem = images.set_index("stem")
    threshold = float(options["min_dice_rca"] or 0)
    try:
        header = list(pd.read_csv(csv, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        raise LabelFileError(f"{csv}: malformed mask table ({err})") from None
    id_col = options.get("id_column") or header[0]
    needed = [id_col, *STRUCTURES.values(), "Height", "Width"] + ([QUALITY] if threshold else [])
    missing = [c for c in needed if c not in header]
    if missing:
        raise LabelFileError(f"{csv}: column(s) {missing} missing; the file has {header}")
    kept, total, low = [], 0, 0
    # in chunks, without the landmarks: the VinDr-CXR table is large and only matching rows are kept
    for chunk in pd.read_csv(csv, usecols=needed, dtype={id_col: str}, chunksize=2000):
        total += len(chunk)
        chunk = chunk.assign(stem=chunk[id_col].map(lambda v: Path(str(v)).stem))
        chunk = chunk[chunk["stem"].isin(by_stem.index)]
        if threshold:
            good = pd.to_numeric(chunk[QUALITY], errors="coerce") >= threshold
            low += int((~good).sum())
            chunk = chunk[good]
        kept.append(chunk)
    rows = pd.concat(kept, ignore_index=True).drop_duplicates("stem")
    log("chexmask", f"{csv.name}: {total} rows, {len(rows)} with an image under {root}"
                    + (f" and Dice RCA >= {threshold} ({low} below it left out)" if threshold else ""))
    if rows.empty:
        raise LabelFileError(f"{csv}: no mask row matches an image under {root} (ids look like "
                             f"{pd.read_csv(csv, usecols=[id_col], nrows=1, dtype=str).iloc[0, 0]!r}, images like "
                             f"{images['stem'].iloc[0]!r})")
    rows = rows.iloc[_subset(list(rows["stem"]), options.get("limit"))].reset_index(drop=True)
    matched = by_stem.loc[rows["stem"]]
    masks = []
    for _, r in rows.iterrows():
        h, w = int(r["Height"]), int(r["Width"])
        masks.append([RleMask(str(r[col]), h, w, f"{csv.name}: {r[id_col]} {name}")
                      if isinstance(r[col], str) and r[col].strip() else None for name, col in STRUCTURES.items()])
    table = pd.DataFrame({"split": matched["split"].to_numpy(), "group": matched["group"].to_numpy(),
                          "image_id": rows[id_col].astype(str).to_numpy()})
    return DenseRaw(table=table, paths=list(matched["image"]), classes=list(STRUCTURES), task=SEGMENTATION,
                    channels=1, masks=masks)


register_dense_source("chexmask", DenseDatasetSpec(
    fetch=fetch, readers={SEGMENTATION: read_segmentation},
    description="CheXmask: heart and left/right lung masks (RLE) of VinDr-CXR (default) or ChestX-ray14 images.",
    license="masks: as stated on the PhysioNet page (open access); images: their source's licence",
    urls=(PAGE,), options=OPTIONS,
), SourceInfo(
    title="CheXmask 1.0.0 (PhysioNet)", access="automatic (masks) + the images' own access", page=PAGE,
    license="masks open access on PhysioNet (cite Gaggion et al., Sci Data 2024); images under their source's "
            "licence (VinDr-CXR: PhysioNet Credentialed Health Data License 1.5.0)",
    split="VinDr-CXR's official train / test (val carved image-wise); ChestX-ray14: test_list or patient-wise hash",
    size="masks of 18,000 VinDr-CXR / 112,120 ChestX-ray14 images, one CSV per source set",
    files=tuple(f"{t}.csv" for t in MASK_TABLES.values()), task="segmentation",
))
