"""Small dense stores and job settings shared by test_detection.py and test_segmentation.py.

Stores come from the pipeline's own path (synthetic generator -> reader -> prepare), at 64 px
and a few dozen images, so everything here runs in seconds on a 2-core CPU.
"""
from __future__ import annotations

from pathlib import Path

from medtl.data import DENSE_DATASETS
from medtl.data.dense_prepare import prepare_dense
from medtl.data.options import declared_options
from medtl.io import write_json

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def synth_store(root: Path, task: str, n: int = 32, size: int = 64, seed: int = 0):
    """A prepared ``synth_cxr_dense`` store for ``task`` under ``root``."""
    spec = DENSE_DATASETS.get("synth_cxr_dense")
    raw = root / "raw"
    manifest = raw / "manifest.json"
    if not manifest.exists():
        write_json(manifest, spec.fetch(raw, {**spec.options, "n": n, "size": 96, "seed": seed}))
    entry = {"type": "synth_cxr_dense", "options": {}, "val_fraction": 0.2, "split_seed": 0}
    return prepare_dense("synth", task, entry, str(manifest), size, str(root / f"{task}_s{size}"))


def prepare_from(root: Path, task: str, kind: str, options: dict, size: int, name: str = "real"):
    """A prepared store of a source configured as a user would (``kind`` = dense dataset type); its
    options must pass the config check, as a user's would have to."""
    spec = DENSE_DATASETS.get(kind)
    problems = declared_options(spec.options).problems(options, f"{kind}.options")
    assert not problems, problems
    manifest = root / "raw" / "manifest.json"
    write_json(manifest, spec.fetch(root / "raw", {**spec.options, **options}))
    entry = {"type": kind, "options": options, "val_fraction": 0.2, "split_seed": 0}
    return prepare_dense(name, task, entry, str(manifest), size, str(root / f"{task}_s{size}"))
