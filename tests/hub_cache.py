"""Hugging Face hub repositories as the hub client stores them, for loaders that read the cache offline.

The layout is huggingface_hub's documented cache (docs: huggingface.co/docs/huggingface_hub/guides/manage-cache,
"Understand caching"): ``<cache>/models--<org>--<name>/`` with the file contents in ``blobs/<hash>``, a
``snapshots/<commit>/<filename>`` symbolic link to each blob and ``refs/<revision>`` naming the commit. With
``HF_HUB_OFFLINE=1`` the owner's loaders (timm's ``create_model(pretrained=True)``, transformers'
``from_pretrained``) read the files from there without any network call.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest


def hub_snapshot(cache_dir: Path, repo_id: str, files: dict[str, Path], revision: str = "main") -> Path:
    """Put ``files`` (name in the repository -> a file written by the owner's own writer) into the cache as
    ``repo_id``'s snapshot at ``revision``; returns the snapshot folder."""
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repr(sorted(files)).encode() + repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        blob = repo / "blobs" / hashlib.sha256(Path(source).read_bytes()).hexdigest()
        shutil.copyfile(source, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(Path(name).parts) + 1)) / "blobs" / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for this test, also for libraries that read it when huggingface_hub was imported."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
