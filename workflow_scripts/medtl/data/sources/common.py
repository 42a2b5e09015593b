"""What every real-data source shares: where files come from (download, or put by hand
into the raw-data folder), how archives are unpacked, and how labels become the
classification stage's :class:`~medtl.data.registry.RawData`. Dense sources (boxes, masks)
share the same file handling and register in the dense registry instead.

Where a source's files are looked for, in order:

1. an explicit path in the dataset's options: ``archive`` (single-archive sources) or
   ``files: {<file name>: <path>}``; ``root`` skips the archive altogether and points at
   an already unpacked copy (saves disk for the large sets);
2. ``<raw_data>/<folder>/<file name>``: ``raw_data`` is the config's top-level
   ``raw_data`` key (default ``raw``, relative to the working directory), passed to
   ``fetch`` as the option ``raw_data``; ``folder`` is the dataset's registry name
   (MURA's three datasets look in ``<raw_data>/mura`` first, MedMNIST in ``<raw_data>/medmnist``);
3. the published URL (or ``urls: {<file name>: <url>}`` in the options), downloaded
   into ``results/raw/<dataset>/downloads`` and checked against the published checksum.

A file with no URL (behind a login or a data-use agreement) that is in none of those
places stops the fetch at once with :class:`ManualDownloadError`, which names the page
to get it from, the exact file name and the folder to put it in.
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from medtl.data.adapters import LabelFileError, _hash_fraction
from medtl.data.download import ChecksumError, DownloadError, download, parse_checksum, verify_checksum
from medtl.data.dense_registry import DENSE_DATASETS, DenseDatasetSpec
from medtl.data.registry import DATASETS, DatasetSpec, RawData
from medtl.io import atomic_path

__all__ = [
    "ArchiveError", "ChecksumError", "DownloadError", "LabelFileError",
    "ManualDownloadError", "RemoteFile", "SOURCES", "DENSE_SOURCES", "SourceInfo", "register_source",
    "register_dense_source", "locate_unpacked",
    "obtain", "obtain_all", "extract", "find_file", "index_images", "hash_split", "label_table",
    "raw_data_dir", "slug",
]


class ManualDownloadError(FileNotFoundError):
    """A file that cannot be downloaded automatically is not where the pipeline looks for it."""


class ArchiveError(ValueError):
    """An archive (or a file in it) is corrupt, truncated or not the expected source."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source: its name on disk, its public URL (None: manual only) and checksum."""
    name: str
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class SourceInfo:
    """What docs/datasets.md states about a source, kept next to the code that fetches it."""
    title: str
    access: str          # "automatic" or "manual"
    page: str            # where a person reads about it / requests it
    license: str
    split: str           # which split the pipeline uses, and why
    size: str
    files: tuple[str, ...] = ()
    task: str = "classification"   # or "detection", "segmentation"


SOURCES: dict[str, SourceInfo] = {}          # classification sources (DATASETS)
DENSE_SOURCES: dict[str, SourceInfo] = {}    # box and mask sources (DENSE_DATASETS)


def register_source(name: str, spec: DatasetSpec, info: SourceInfo) -> DatasetSpec:
    DATASETS.register(name)(spec)
    SOURCES[name] = info
    return spec


def register_dense_source(name: str, spec: DenseDatasetSpec, info: SourceInfo) -> DenseDatasetSpec:
    DENSE_DATASETS.register(name)(spec)
    DENSE_SOURCES[name] = info
    return spec


def log(dataset: str, msg: str) -> None:
    print(f"[{dataset}] {msg}", file=sys.stderr, flush=True)


def slug(text: str) -> str:
    """A class name safe as a CSV column and a file name: 'Pleural Effusion' -> 'pleural_effusion'."""
    return re.sub(r"[^0-9a-z]+", "_", str(text).lower()).strip("_")


# -- locating and downloading files ---------------------------------------------------------------
def raw_data_dir(options: dict) -> Path:
    return Path(options.get("raw_data") or "raw").expanduser()


def _checksums(remote: RemoteFile, options: dict) -> tuple[str | None, str | None]:
    """The published digest, unless ``checksums: {<name>: 'md5:...'}`` overrides it or ``verify: false``."""
    if options.get("verify", True) is False:
        return None, None
    override = (options.get("checksums") or {}).get(remote.name)
    if override:
        return parse_checksum(override)
    return remote.md5, remote.sha256


def local_candidates(dataset: str, remote: RemoteFile, options: dict, folders: Iterable[str] = (),
                     single_archive: bool = False) -> list[Path]:
    explicit = (options.get("files") or {}).get(remote.name)
    if explicit is None and single_archive:
        explicit = options.get("archive")
    if explicit:
        return [Path(explicit).expanduser()]
    base = raw_data_dir(options)
    # a shared folder (MURA's three datasets: 'mura') comes first, so the message recommends it
    return [base / folder / remote.name for folder in dict.fromkeys([*folders, dataset])]


def manual_message(dataset: str, missing: list[RemoteFile], options: dict, page: str, why: str,
                   folders: Iterable[str] = (), single_archive: bool = False) -> str:
    names = ", ".join(f"'{m.name}'" for m in missing)
    where = local_candidates(dataset, missing[0], options, folders, single_archive)[0]
    folder = where.parent.resolve()
    alt = ("set the dataset's option 'archive' to the file's path, or 'root' to an unpacked copy"
           if single_archive else "set the dataset's option 'files: {<file name>: <path>}', or 'root' "
           "to an unpacked copy")
    why = f" {why.strip()}" if why else ""
    return (f"dataset '{dataset}' needs a manual download.{why} Get {names} from {page} and put "
            f"{'it' if len(missing) == 1 else 'them'} in {folder}/ (the config's 'raw_data' folder, "
            f"'{raw_data_dir(options)}', then '{where.parent.name}/'). Alternatively {alt}. "
            "Then run the workflow again.")


def obtain(dataset: str, remote: RemoteFile, raw_dir: Path, options: dict, *, page: str = "",
           why: str = "", folders: Iterable[str] = (), single_archive: bool = False) -> Path:
    """Path of ``remote`` on this machine: found locally (and verified) or downloaded (and verified)."""
    return obtain_all(dataset, [remote], raw_dir, options, page=page, why=why, folders=folders,
                      single_archive=single_archive)[0]


def obtain_all(dataset: str, remotes: list[RemoteFile], raw_dir: Path, options: dict, *, page: str = "",
               why: str = "", folders: Iterable[str] = (), single_archive: bool = False) -> list[Path]:
    """Like :func:`obtain` for several files; every manual file is checked *before* any download
    starts, so a missing login-only file fails in seconds, not after hours of downloading."""
    urls = options.get("urls") or {}
    found: dict[str, Path] = {}
    missing_manual: list[RemoteFile] = []
    for remote in remotes:
        local = next((p for p in local_candidates(dataset, remote, options, folders, single_archive)
                      if p.is_file()), None)
        if local is not None:
            found[remote.name] = local
        elif not (urls.get(remote.name) or remote.url):
            missing_manual.append(remote)
    if missing_manual:
        raise ManualDownloadError(manual_message(dataset, missing_manual, options, page, why, folders,
                                                 single_archive))
    paths = []
    for remote in remotes:
        md5, sha256 = _checksums(remote, options)
        if remote.name in found:
            path = found[remote.name]
            verify_checksum(path, md5, sha256, what=str(path))
        else:
            url = urls.get(remote.name) or remote.url
            log(dataset, f"downloading {remote.name} from {url}")
            path = download(url, Path(raw_dir) / "downloads" / remote.name, md5=md5, sha256=sha256,
                            retries=int(options.get("retries", 4)), backoff=float(options.get("backoff", 2.0)))
        paths.append(path)
    return paths


# -- archives -------------------------------------------------------------------------------------
def _safe_name(name: str, archive: Path) -> str:
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts:
        raise ArchiveError(f"{archive}: member '{name}' would be written outside the extraction folder")
    return name


def extract(archive: Path, dest: Path, keep: Callable[[str], bool] | None = None, allow_empty: bool = False) -> Path:
    """Unpack ``archive`` (zip, tar, tar.gz) into ``dest``, atomically and once.

    Members for which ``keep(name)`` is false are skipped (e.g. MURA's other body parts,
    BACH's whole-slide images); ``allow_empty`` accepts an archive none of whose members are
    kept (NIH's box images need not be in every tarball). The folder is built as
    ``dest.partial`` and renamed, with a marker naming the archive, so an interrupted unpack
    is redone, never half-used.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / ".extracted"
    stamp = f"{archive.name} {archive.stat().st_size}"
    if marker.exists() and marker.read_text().strip() == stamp:
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.is_dir() or (keep and not keep(info.filename)):
                        continue
                    _safe_name(info.filename, archive)
                    zf.extract(info, tmp)
                    n += 1
        elif _is_tar(archive):
            with tarfile.open(archive) as tf:
                for member in tf:
                    if not member.isfile() or (keep and not keep(member.name)):
                        continue
                    _safe_name(member.name, archive)
                    tf.extract(member, tmp, filter="data")
                    n += 1
        else:
            raise ArchiveError(f"{archive}: not a zip or tar archive (corrupt, truncated or the wrong file); "
                               "delete it and download it again")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, ValueError,
            OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        # an OSError with an errno (disk full, permissions) is the machine's problem, not the archive's
        if isinstance(err, ArchiveError) or (isinstance(err, OSError) and err.errno is not None):
            raise
        raise ArchiveError(f"{archive}: corrupt or truncated archive ({type(err).__name__}: {err}); "
                           "delete it and download it again") from None
    if n == 0 and not allow_empty:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(f"{archive}: holds none of the expected files; is it the right archive?")
    (tmp / ".extracted").write_text(stamp + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError):
        return False


def find_file(root: Path, name: str, what: str) -> Path:
    """The one file called ``name`` under ``root`` (shallowest first); a clear error if absent."""
    root = Path(root)
    hits: list[Path] = []
    for depth in range(3):   # the usual places first: walking 200k images to find a CSV takes a while
        hits = sorted(h for h in root.glob("*/" * depth + name) if h.is_file())
        if hits:
            break
    if not hits:
        hits = sorted((h for h in root.rglob(name) if h.is_file()), key=lambda p: (len(p.parts), str(p)))
    if not hits:
        raise ArchiveError(f"{what}: has no '{name}' (looked under {root}); is it the right, complete archive?")
    return hits[0]


def index_images(root: Path | Iterable[Path], suffixes: Iterable[str]) -> dict[str, Path]:
    """File stem -> path for every image under ``root`` (one or several folders)."""
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    suffixes = {s.lower() for s in suffixes}
    out: dict[str, Path] = {}
    for r in roots:
        for dirpath, _, files in os.walk(r):
            for f in files:
                p = Path(dirpath) / f
                if p.suffix.lower() in suffixes:
                    out.setdefault(p.stem, p)
    return out


# -- labels ---------------------------------------------------------------------------------------
def hash_split(keys: pd.Series, test_fraction: float) -> np.ndarray:
    """train/test by a stable hash of ``keys`` (patient ids): a patient is never on both sides,
    and the split does not change when rows are added or reordered."""
    return np.where(_hash_fraction(keys.astype(str).reset_index(drop=True)) < float(test_fraction), "test", "train")


def label_table(split, group, image_id, onehot: pd.DataFrame) -> pd.DataFrame:
    """The RawData table: split, group, image_id, then one 0/1 column per class."""
    base = pd.DataFrame({"split": np.asarray(split, dtype=object), "group": np.asarray(group, dtype=object),
                         "image_id": np.asarray(image_id, dtype=object)})
    return pd.concat([base, onehot.reset_index(drop=True).astype(int)], axis=1)


def onehot(labels: Iterable, classes: list[str]) -> pd.DataFrame:
    labels = np.asarray(list(labels), dtype=object)
    return pd.DataFrame({c: (labels == c).astype(int) for c in classes})


def single_label_raw(table: pd.DataFrame, classes: list[str], channels: int, label_col: str = "label",
                     path_col: str = "path") -> RawData:
    """RawData for a table with split/group/image_id, a class-name column and an absolute path column."""
    task = "binary" if len(classes) == 2 else "multiclass"
    out = label_table(table["split"], table["group"], table["image_id"], onehot(table[label_col], classes))
    return RawData(out, list(classes), task, channels, paths=[str(p) for p in table[path_col]])


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_csv_checked(path: Path, columns: Iterable[str], **kwargs) -> pd.DataFrame:
    """Read a source's label file; a missing file, a parse failure or a missing column names the file.
    A UTF-8 byte-order mark (a copy saved by Excel) is not part of the first column's name."""
    try:
        df = pd.read_csv(path, **{"encoding": "utf-8-sig", **kwargs})
    except FileNotFoundError:
        raise LabelFileError(f"{path}: label file is missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LabelFileError(f"{path}: malformed label file ({err})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LabelFileError(f"{path}: column(s) {missing} missing; the file has {list(df.columns)}")
    return df


def manifest_root(options: dict, what: str) -> Path | None:
    """``root`` option: an already unpacked copy of the source, used in place of its archive."""
    root = options.get("root")
    if not root:
        return None
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: option 'root' is {root}, which is not a folder")
    return root


def locate_unpacked(dataset: str, archive: RemoteFile, marker: str, raw_dir: Path, options: dict, *, page: str,
                    why: str, keep: Callable[[str], bool] | None = None) -> Path:
    """The file ``marker`` (e.g. an annotation file) of a manual source used unpacked, found in
    order: under the ``root`` option; in an unpacked copy put in ``<raw_data>/<dataset>/``; in its
    archive (in that folder, or at the ``archive`` option), unpacked once under ``raw_dir``.
    Nowhere: :class:`ManualDownloadError` naming the page, the archive and the folder."""
    root = manifest_root(options, dataset)
    if root is not None:
        return find_file(root, marker, f"{dataset}: option 'root' ({root})")
    folder = raw_data_dir(options) / dataset
    if folder.is_dir() and not options.get("archive"):
        for depth in range(6):   # a PhysioNet mirror: physionet.org/files/<name>/<version>/...
            hits = sorted(h for h in folder.glob("*/" * depth + marker) if h.is_file())
            if hits:
                return hits[0]
    path = obtain(dataset, archive, raw_dir, options, page=page, why=why, single_archive=True)
    return find_file(extract(path, Path(raw_dir) / "extracted", keep=keep), marker, str(path))


def merge_dict_option(options: dict, key: str, defaults: dict) -> dict:
    """Options merge shallowly (config over registry defaults); a dict option set in the config
    should still keep the defaults for the keys it does not mention."""
    value = options.get(key)
    if value is None:
        return dict(defaults)
    if isinstance(value, dict):
        return {**defaults, **value}
    return {k: value for k in defaults}   # one value for every key

