"""What every training job (classification, detection, segmentation, pretraining) sets up the same way:
the device, the seeds, the signature of its settings, its threads, and atomic ``torch.save``.

The lowest layer of the jobs: it imports nothing of medtl but ``medtl.io``, so the training,
detection and segmentation packages all import from here, never from each other. PyTorch is imported
inside the functions that need it, so reading this module costs nothing while the workflow plans.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

from medtl.io import atomic_path


def signature(hp: dict) -> str:
    """A short hash of a job's config slice: a checkpoint is resumed only by a job with the same one."""
    return hashlib.sha256(json.dumps(hp, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_device(name: str = "auto"):
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:<index>`` as a torch.device;
    a GPU asked for where there is none is an error that says what to set instead."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but CUDA is not available; set device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    """Keep a job within the threads the scheduler gave it."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def rng_state() -> dict:
    """The global generators' state, for a checkpoint (a resumed run draws what the uninterrupted one would)."""
    import numpy as np
    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``: a kill mid-save keeps the previous one."""
    import torch

    with atomic_path(Path(path)) as tmp:
        torch.save(obj, tmp)
