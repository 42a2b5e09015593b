"""Frozen computation done once: backbone features cached per (dataset, architecture, weights).

Linear probing trains only the head on a backbone that never changes (parameters frozen,
everything before the head in eval mode: BatchNorm statistics fixed, dropout off), so the
head's input for each image is the same in every epoch of every job that shares the dataset,
architecture and starting weights: 3 learning rates x 3 seeds x (LP + the LP stage of LP-FT).
The ``extract_features`` rule computes it once, in float32, for every image of the prepared
store; those jobs then train and validate the head on rows of that array. Results match the
uncached path (tests/test_feature_cache.py).

Files: ``{weights_id}.npy``, float32 (N, D), row i = image i of the store's ``images.npy``,
and ``{weights_id}.json``, what it was computed from (checked when a job loads it).

The generic part, :func:`cache_rows` / :func:`load_rows`, caches the output of any frozen
function of store rows (e.g. a frozen SAM image encoder's embeddings, (N, 256, 64, 64)).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medtl.io import atomic_path, write_json
# answered without PyTorch, so that the workflow can ask while it plans
from medtl.strategies.spec import uses_frozen_features  # noqa: F401
from medtl.training.spec import FEATURES_VERSION, describe  # noqa: F401


# -- generic: cache the rows of any frozen function -------------------------------------------------------
def cache_rows(path: str | os.PathLike, n_rows: int, compute: Callable[[int, int], torch.Tensor | np.ndarray],
               batch_size: int, dtype=np.float32, label: str = "features") -> np.ndarray:
    """Write ``compute(start, stop)`` (an array of ``stop - start`` rows, any row shape) for every
    row range of ``range(n_rows)`` into the .npy file ``path``, atomically; returns it memory-mapped.

    The row shape is taken from the first batch; nothing larger than one batch is held in memory.
    """
    path = Path(path)
    out = None
    started, step = time.monotonic(), max(1, n_rows // batch_size // 10)
    with atomic_path(path) as tmp:  # renamed over ``path`` only once every row is written
        for i, start in enumerate(range(0, n_rows, batch_size)):
            stop = min(n_rows, start + batch_size)
            rows = compute(start, stop)
            rows = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
            if rows.shape[0] != stop - start:
                raise ValueError(f"compute({start}, {stop}) returned {rows.shape[0]} rows")
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, *rows.shape[1:]))
            out[start:stop] = rows
            if (i + 1) % step == 0 or stop == n_rows:
                print(f"[features] {label}: {stop}/{n_rows} rows ({time.monotonic() - started:.1f} s)",
                      file=sys.stderr, flush=True)
        if out is None:
            raise ValueError("no rows to cache")
        out.flush()
        del out
    return load_rows(path, n_rows)


def load_rows(path: str | os.PathLike, n_rows: int | None = None) -> np.ndarray:
    """A cache written by :func:`cache_rows`, memory-mapped; checks the row count when given."""
    rows = np.load(path, mmap_mode="r")
    if n_rows is not None and len(rows) != n_rows:
        raise ValueError(f"{path}: {len(rows)} cached rows for {n_rows} images; the store changed since the "
                         "cache was made: rerun its extract_features job")
    return rows


# -- backbone features of the classification networks ---------------------------------------------------
@torch.no_grad()
def backbone_features(net, x: torch.Tensor) -> torch.Tensor:
    """The head's input for a normalised batch, float32 (B, D); ``net`` is expected in eval mode."""
    return net.features(x).flatten(1).float()


def extract(spec: dict, store_dir: str, weights_file: str | None, out_npy: str, out_json: str,
            device: str = "auto", batch_size: int = 128, threads: int = 1) -> np.ndarray:
    """Compute and write the backbone features of every image of a prepared store.

    ``spec`` is :func:`describe`'s dict. Always float32 without autocast (the cached path must match
    the uncached one), channels_last on CUDA.
    """
    from medtl.data.store import load_store
    from medtl.models import build_network
    from medtl.models.weights import load_weights
    from medtl.runtime import resolve_device, set_threads
    from medtl.training.batches import Normalizer, SplitData

    set_threads(threads)
    started = time.monotonic()
    store = load_store(store_dir)
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)  # the head's initialisation (unused) must not depend on anything
    net = build_network(spec["arch"], len(store.classes))
    load_weights(net, weights_file)
    net.to(dev).eval()
    if cuda:
        net.to(memory_format=torch.channels_last)
    from medtl.models.weights import input_normalization

    mean, std = input_normalization("weights" if spec["mean"] == "weights" else spec, weights_file)
    norm = Normalizer(mean, std, dev, channels_last=cuda)
    everything = SplitData(store.images, np.arange(len(store.images)), np.zeros((len(store.images), 1)),
                           pin=cuda, prefetch=False)

    def compute(start: int, stop: int) -> torch.Tensor:
        x, _ = everything.batch(np.arange(start, stop))
        return backbone_features(net, norm(x))

    feats = cache_rows(out_npy, len(store.images), compute, batch_size, label=f"{spec['arch']} on {store_dir}")
    write_json(Path(out_json), {**spec, "rows": int(feats.shape[0]), "dim": int(feats.shape[1]),
                                "dtype": str(feats.dtype), "store": str(store_dir),
                                "weights_file": weights_file, "device": str(dev),
                                "seconds": round(time.monotonic() - started, 2)})
    return feats


def meta_path(npy: str | os.PathLike) -> Path:
    return Path(npy).with_suffix(".json")


@dataclass
class CachedFeatures:
    """Cached backbone features of one store, split like the store: what the trainer uses in the epochs
    in which the backbone is frozen, and the job for its final predictions when it stayed frozen."""
    rows: np.ndarray  # memory-mapped (N, D) float32
    splits: dict  # split name -> SplitData over ``rows``
    to_device: Callable[[torch.Tensor], torch.Tensor]

    @classmethod
    def load(cls, npy: str | os.PathLike, store, expect: dict, device: torch.device) -> "CachedFeatures":
        from medtl.training.batches import SplitData, ToDevice

        meta_file = meta_path(npy)
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            differs = sorted(k for k in expect if meta.get(k) != expect[k])
            if differs:
                raise ValueError(f"{npy}: cached features were computed with other {differs} "
                                 f"({ {k: meta.get(k) for k in differs} } != { {k: expect[k] for k in differs} }); "
                                 "rerun its extract_features job")
        rows = load_rows(npy, len(store.images))
        pin = device.type == "cuda"
        splits = {s: SplitData(rows, store.indices(s), store.targets(s), pin=pin) for s in ("train", "val", "test")}
        return cls(rows=rows, splits=splits, to_device=ToDevice(device))
