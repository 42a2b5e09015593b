"""Atomic file writing: a killed job never leaves a file that looks complete."""
from __future__ import annotations

import errno
import glob
import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


#: errno values with which a file system refuses a write for a reason outside the job, in words
REFUSED = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: what torch.save raises when the file system stops its writes short (a full disk or quota): no errno
TORCH_SHORT_WRITE = re.compile(r"unexpected pos|PytorchStreamWriter failed writing|file write failed")


class WriteError(OSError):
    """A file could not be written because the file system refused (full disk, quota, read-only folder,
    permissions). Its message is one sentence: which path, why, and what to check."""

    def __init__(self, message: str, code: int | None):
        super().__init__(message)
        self.errno = code


def temporaries(path: str | os.PathLike) -> list[Path]:
    """The temporary files :func:`atomic_path` writes beside ``path`` (``.<name>.<random>.tmp``); any that
    exist while no write of ``path`` is under way were left by a killed writer."""
    path = Path(path)
    return [Path(p) for p in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp"))]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it over ``path`` only on success.

    When the file system refuses the write (no space, quota, read-only, permissions; or torch's writer
    stopping short, which a full disk causes), :class:`WriteError` says so in one sentence naming ``path``."""
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as err:
        refused = write_refused(path, err)
        if refused is None:
            raise
        raise refused from err
    finally:
        if tmp_path is not None:
            try:
                tmp_path.unlink(missing_ok=True)
            except OSError:  # a read-only folder: nothing was written there either
                pass


def write_refused(path: Path, err: BaseException) -> WriteError | None:
    """``err`` as a :class:`WriteError` naming ``path`` when it is the file system refusing a write of
    ``path``, else None (other errors, such as reading an unreadable input, pass unchanged)."""
    if isinstance(err, WriteError):
        return None
    if isinstance(err, RuntimeError):
        if not TORCH_SHORT_WRITE.search(str(err)):
            return None
        code, why = errno.ENOSPC, "no space left on device or disk quota exceeded"
        detail = f"torch's writer stopped short: {_first_line(err)}; "
    else:
        code = err.errno if err.errno is not None else _errno_in_text(str(err))
        if code not in REFUSED:
            return None
        # this write: the file, its temporary sibling (mkstemp's name), a folder above it
        mine = err.filename is None or Path(err.filename).parent == path.parent or \
            Path(err.filename) in (path, *path.parents)
        if not mine:
            if code not in (errno.ENOSPC, errno.EDQUOT):
                return None  # a permission error on some other file (an input being read): not this write
            path = Path(err.filename)  # another file written in the block filled the disk
        why, detail = REFUSED[code], ""
    folder = _existing(path.parent)
    if code in (errno.ENOSPC, errno.EDQUOT):
        hint = f"{_free(folder)} free there; see df -h {folder}, free some space and rerun"
    else:
        hint = f"see ls -ld {folder}; make it writable or set results: in the config to a writable folder, and rerun"
    return WriteError(f"cannot write {path}: {why} ({detail}{hint})", code)


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _errno_in_text(text: str) -> int | None:
    """pyarrow and others put the errno only in the message ("[errno 28] No space left on device")."""
    found = re.search(r"errno (\d+)", text, re.IGNORECASE)
    return int(found.group(1)) if found else None


def _existing(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists (the one that refused to hold a new folder)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    unit = "bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            break
        free /= 1024
    return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling temp folder; it replaces ``path`` whole only on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON (RFC 8259), which every reader accepts: a NaN or infinite number is written as ``null``,
    never as the bare ``NaN`` / ``Infinity`` that Python's json would write and strict readers refuse.
    (A metric is null with its reason in ``metrics.json``: see :func:`medtl.metrics.evaluate`.)"""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=True, default=_jsonable, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (NumPy's included) replaced by None, and NumPy scalars and
    arrays as Python numbers and lists, so that ``json.dumps(..., allow_nan=False)`` accepts it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if type(obj).__module__ == "numpy":  # a NumPy scalar or array, without importing NumPy here
        if hasattr(obj, "tolist"):
            return strict_json(obj.tolist())
    return obj


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file is missing") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}); "
            "delete it and rerun the job that writes it"
        ) from None


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
