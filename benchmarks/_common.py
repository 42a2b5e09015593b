"""Shared by the benchmark scripts: imports of the medtl package, timing, side-by-side repeats."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({cpu}), {gpu}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 0) -> dict[str, list[float]]:
    """Wall time of each variant, run in turns (A B C, then B C A, ...) ``repeats`` times after ``warmup``
    untimed turns, so that load from other processes on a shared machine hits every variant alike."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        turn = names[r % len(names):] + names[:r % len(names)]
        for name in turn:
            t0 = time.perf_counter()
            variants[name]()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"median {median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   machine: {machine()}")


def synthetic_store(root: Path, n: int, size: int, n_classes: int = 3, seed: int = 0):
    """A learnable multi-class store of ``n`` RGB images (60% train, 20% val, 20% test), written as prepare does."""
    import numpy as np
    import pandas as pd

    from medtl.data.store import write_store

    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    split = np.array(["train", "train", "train", "val", "test"] * (n // 5 + 1))[:n]
    labels = pd.DataFrame({"index": range(n), "split": split, "group": "", "image_id": [f"i{i}" for i in range(n)]})
    classes = [f"c{c}" for c in range(n_classes)]
    for c, name in enumerate(classes):
        labels[name] = (y == c).astype(int)

    def fill(out):
        band = size // n_classes
        for i in range(n):
            img = rng.integers(0, 100, size=(size, size, 3), dtype=np.uint8)
            img[y[i] * band:(y[i] + 1) * band] += 120
            out[i] = img

    meta = {"name": "bench", "task": "multiclass", "classes": classes, "metrics": ["accuracy", "auroc"],
            "primary_metric": "accuracy"}
    return write_store(root, n, (size, size), 3, fill, labels, meta)
