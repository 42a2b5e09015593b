"""Resumable, verified downloads with the standard library only (urllib).

``download(url, dest, md5=..., sha256=...)`` never leaves a file at ``dest`` that is
not complete and verified:

- bytes go to ``dest.part``; ``dest`` appears only by renaming a verified ``.part``;
- an interrupted transfer keeps its ``.part``, and the next attempt (in this call,
  after a backoff, or in a later run) resumes it with an HTTP ``Range`` request;
  a server that ignores ``Range`` (answers 200) simply restarts the file;
- a checksum mismatch deletes the ``.part`` (a corrupt prefix would otherwise be
  resumed forever) and raises :class:`ChecksumError` naming the file, the
  expected and the actual digest;
- transient failures (connection errors, time-outs, HTTP 408/429/5xx, a body
  shorter than its Content-Length) are retried with exponential backoff;
  permanent ones (404, 403, ...) fail at once with the URL and status.

``file://`` URLs are served by the same code path (with seek-based resume), which
is what the tests and users with a local mirror use.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

USER_AGENT = "medtl-workflow-downloader/1.0 (+urllib)"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that cannot complete (after retries, or a permanent server answer)."""


class ChecksumError(DownloadError):
    """The bytes arrived but are not the published file."""


class _Transient(Exception):
    """Internal: worth retrying after a pause."""


# -- checksums ------------------------------------------------------------------------------------
def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def parse_checksum(text: str | None) -> tuple[str | None, str | None]:
    """``"md5:<hex>"``, ``"sha256:<hex>"`` or a bare hex digest (length picks the algorithm) -> (md5, sha256)."""
    if not text:
        return None, None
    text = str(text).strip().lower()
    algo, _, digest = text.rpartition(":")
    if not algo:
        algo = {32: "md5", 64: "sha256"}.get(len(digest), "")
    if algo not in ("md5", "sha256") or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(f"checksum {text!r}: expected 'md5:<32 hex>' or 'sha256:<64 hex>'")
    return (digest, None) if algo == "md5" else (None, digest)


def verify_checksum(path: str | os.PathLike, md5: str | None = None, sha256: str | None = None,
                    what: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the given digest(s); no digest given: nothing to check."""
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if not expected:
            continue
        actual = file_digest(path, algo)
        if actual != expected.lower():
            raise ChecksumError(
                f"{what or Path(path).name}: {algo} checksum mismatch (expected {expected.lower()}, "
                f"got {actual}); the file is corrupt or not the published version")


# -- transfer -------------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(f"[download] {msg}", file=sys.stderr, flush=True)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class _Progress:
    """A line to stderr every 10 s or 10 %, so a long download in a job log is visibly alive."""

    def __init__(self, name: str, done: int, total: int | None):
        self.name, self.done, self.total = name, done, total
        self.last_t, self.last_frac = time.monotonic(), -1.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        frac = self.done / self.total if self.total else 0.0
        if now - self.last_t >= 10 or (self.total and frac - self.last_frac >= 0.1):
            of = f" of {_human(self.total)} ({100 * frac:.0f} %)" if self.total else ""
            _log(f"{self.name}: {_human(self.done)}{of}")
            self.last_t, self.last_frac = now, frac


def _copy_stream(src, part: Path, mode: str, progress: _Progress, chunk: int) -> None:
    with open(part, mode) as out:
        while True:
            block = src.read(chunk)
            if not block:
                break
            out.write(block)
            progress.add(len(block))


def _transfer_file_url(url: str, part: Path, chunk: int) -> None:
    src_path = Path(urllib.request.url2pathname(urlparse(url).path))
    if not src_path.is_file():
        raise DownloadError(f"{url}: no such file ({src_path})")
    total = src_path.stat().st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:  # not a prefix of this file: start again
        offset = 0
    with open(src_path, "rb") as src:
        src.seek(offset)
        _copy_stream(src, part, "ab" if offset else "wb", _Progress(part.name[:-5], offset, total), chunk)


def _transfer_http(url: str, part: Path, timeout: float, chunk: int, headers: dict) -> None:
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return  # the .part already holds every byte; the checksum decides whether it is right
        if err.code in (408, 425, 429) or err.code >= 500:
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    with response:
        status = response.status
        mode = "wb"
        if offset and status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not (match and int(match.group(1)) == offset):
                # bytes from somewhere else in the file: appending them would corrupt it
                part.unlink(missing_ok=True)
                raise _Transient("server answered the range request at the wrong offset; restarting")
            mode = "ab"
        if mode == "wb" and offset:
            _log(f"{part.name[:-5]}: server did not resume at byte {offset}; starting again")
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None
        _copy_stream(response, part, mode, _Progress(part.name[:-5], offset, expected), chunk)
    got = part.stat().st_size
    if expected is not None and got < expected:
        raise _Transient(f"connection closed after {got} of {expected} bytes")


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
             retries: int = 4, backoff: float = 2.0, timeout: float = 60.0, chunk_size: int = CHUNK,
             headers: dict | None = None) -> Path:
    """Fetch ``url`` to ``dest`` (resumable, verified, atomic); return ``dest``.

    An existing ``dest`` is kept when it passes the checksum (or when none is known),
    so a finished download is never repeated.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    what = f"{dest.name} (from {url})"
    if dest.exists():
        try:
            verify_checksum(dest, md5, sha256, what=str(dest))
            return dest
        except ChecksumError as err:
            _log(f"{err}; downloading it again")
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: unsupported URL scheme '{scheme}' (use http, https or file)")
    fresh_retry_done = False
    while True:
        resumed = part.exists() and part.stat().st_size > 0
        _fetch_with_retries(url, part, scheme, retries, backoff, timeout, chunk_size, headers or {})
        try:
            verify_checksum(part, md5, sha256, what=what)
            break
        except ChecksumError:
            part.unlink(missing_ok=True)  # never resume from bytes that proved wrong
            if resumed and not fresh_retry_done:
                _log(f"{dest.name}: checksum mismatch after resuming; downloading from scratch once")
                fresh_retry_done = True
                continue
            raise
    os.replace(part, dest)
    _log(f"{dest.name}: complete ({_human(dest.stat().st_size)})")
    return dest


def _fetch_with_retries(url, part, scheme, retries, backoff, timeout, chunk, headers) -> None:
    attempt = 0
    while True:
        try:
            if scheme == "file":
                _transfer_file_url(url, part, chunk)
            else:
                _transfer_http(url, part, timeout, chunk, headers)
            return
        except DownloadError:
            raise
        except (_Transient, urllib.error.URLError, http.client.HTTPException, ConnectionError,
                socket.timeout, TimeoutError, OSError) as err:
            attempt += 1
            if attempt > retries:
                kept = f"; {part} is kept and the next run resumes it" if part.exists() else ""
                raise DownloadError(f"{url}: download failed after {attempt} attempts ({err}){kept}") from None
            pause = backoff * 2 ** (attempt - 1)
            _log(f"{part.name[:-5]}: attempt {attempt} failed ({err}); retrying in {pause:.1f} s")
            time.sleep(pause)

