"""Downloads: resumable (HTTP Range), checksum-verified, retried with backoff, atomic."""
from __future__ import annotations

import hashlib
import os

import pytest

from data_server import serve
from medtl.data.download import ChecksumError, DownloadError, download, parse_checksum, verify_checksum

DATA = os.urandom(300_000)
MD5 = hashlib.md5(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()
FAST = {"retries": 3, "backoff": 0.01, "timeout": 5, "chunk_size": 16_384}


@pytest.fixture
def server():
    with serve() as state:
        yield state


def test_download_verifies_both_digests_and_leaves_no_part(server, tmp_path):
    url = server.add("/files/data.bin", DATA)
    dest = download(url, tmp_path / "data.bin", md5=MD5, sha256=SHA256, **FAST)
    assert dest.read_bytes() == DATA
    assert not (tmp_path / "data.bin.part").exists()
    assert server.requests == [("/files/data.bin", None)]


def test_partial_download_resumes_with_range(server, tmp_path):
    url = server.add("/data.bin", DATA)
    (tmp_path / "data.bin.part").write_bytes(DATA[:120_000])   # left by an interrupted run
    download(url, tmp_path / "data.bin", md5=MD5, **FAST)
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert server.requests == [("/data.bin", "bytes=120000-")]
    assert not (tmp_path / "data.bin.part").exists()


def test_dropped_connection_is_retried_and_resumed(server, tmp_path):
    url = server.add("/data.bin", DATA)
    server.drop_after["/data.bin"] = 100_000   # first response stops after 100 kB
    download(url, tmp_path / "data.bin", sha256=SHA256, **FAST)
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert len(server.requests) == 2
    first_range, second_range = server.requests[0][1], server.requests[1][1]
    assert first_range is None and second_range is not None and second_range.startswith("bytes=")
    assert int(second_range[6:-1]) >= 100_000 - FAST["chunk_size"]


def test_checksum_mismatch_leaves_no_final_and_no_part_file(server, tmp_path):
    url = server.add("/data.bin", DATA)
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as err:
        download(url, tmp_path / "data.bin", md5=wrong, **FAST)
    msg = str(err.value)
    assert "data.bin" in msg and wrong in msg and MD5 in msg and "md5" in msg
    assert not (tmp_path / "data.bin").exists()
    assert not (tmp_path / "data.bin.part").exists()


def test_corrupt_partial_file_is_discarded_and_downloaded_once_more(server, tmp_path):
    url = server.add("/data.bin", DATA)
    (tmp_path / "data.bin.part").write_bytes(b"\0" * 50_000)   # wrong bytes from an earlier attempt
    download(url, tmp_path / "data.bin", md5=MD5, **FAST)
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert [r for _, r in server.requests] == ["bytes=50000-", None]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    url = server.add("/data.bin", DATA)
    (tmp_path / "data.bin.part").write_bytes(DATA[:1000])
    download(url, tmp_path / "data.bin", md5=MD5, **FAST)
    assert (tmp_path / "data.bin").read_bytes() == DATA


def test_complete_part_file_is_verified_and_renamed(server, tmp_path):
    url = server.add("/data.bin", DATA)
    (tmp_path / "data.bin.part").write_bytes(DATA)   # killed between the last byte and the rename
    download(url, tmp_path / "data.bin", md5=MD5, **FAST)
    assert (tmp_path / "data.bin").read_bytes() == DATA
    assert server.requests == [("/data.bin", f"bytes={len(DATA)}-")]   # answered 416: nothing left to fetch


def test_missing_file_fails_at_once_naming_url_and_status(server, tmp_path):
    url = server.url("/nothing-here.zip")
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "x.zip", **FAST)
    assert url in str(err.value) and "404" in str(err.value)
    assert len(server.requests) == 1   # a permanent error is not retried
    assert not (tmp_path / "x.zip").exists()


def test_server_errors_are_retried_then_reported(server, tmp_path):
    server.add("/busy.bin", DATA)
    server.status["/busy.bin"] = 503
    with pytest.raises(DownloadError) as err:
        download(server.url("/busy.bin"), tmp_path / "busy.bin", **FAST)
    assert "after 4 attempts" in str(err.value) and "503" in str(err.value)
    assert len(server.requests) == FAST["retries"] + 1
    assert not (tmp_path / "busy.bin").exists()


def test_file_url_download_and_resume(tmp_path):
    src = tmp_path / "mirror" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    dest = tmp_path / "out" / "data.bin"
    dest.parent.mkdir()
    (dest.parent / "data.bin.part").write_bytes(DATA[:7])
    download(src.as_uri(), dest, md5=MD5, **FAST)
    assert dest.read_bytes() == DATA
    with pytest.raises(DownloadError, match="no such file"):
        download((tmp_path / "absent.bin").as_uri(), tmp_path / "absent.bin", **FAST)


def test_existing_file_is_kept_when_valid_and_replaced_when_not(server, tmp_path):
    url = server.add("/data.bin", DATA)
    dest = tmp_path / "data.bin"
    dest.write_bytes(DATA)
    download(url, dest, md5=MD5, **FAST)
    assert server.requests == []   # nothing fetched
    dest.write_bytes(b"stale")
    download(url, dest, md5=MD5, **FAST)
    assert dest.read_bytes() == DATA and len(server.requests) == 1


def test_unsupported_scheme_is_refused(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        download("ftp://example.org/x", tmp_path / "x", **FAST)


def test_checksum_text_forms():
    assert parse_checksum("md5:" + MD5) == (MD5, None)
    assert parse_checksum(SHA256.upper()) == (None, SHA256)
    assert parse_checksum(None) == (None, None)
    with pytest.raises(ValueError, match="md5:<32 hex>"):
        parse_checksum("crc32:1234")


def test_verify_checksum_names_the_file(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_bytes(b"a,b\n")
    verify_checksum(f, md5=hashlib.md5(b"a,b\n").hexdigest())
    with pytest.raises(ChecksumError, match="labels.csv: sha256 checksum mismatch"):
        verify_checksum(f, sha256="f" * 64)
