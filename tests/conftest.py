"""Shared fixtures: tiny prepared stores, tiny networks, strategy contexts and trainers.

Everything here is small enough for a 2-core CPU; nothing touches the network.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medtl.data.store import write_store
from medtl.models import build_network
from medtl.strategies.base import Context
from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, SplitData
from medtl.training.trainer import LoopSettings, Trainer

# One thread: on a small shared CPU, two spinning intra-op threads make these tiny models up to 100x
# slower; jobs run single-threaded by default too (medtl.training.job.run(threads=1)).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# -- prepared stores -------------------------------------------------------------------------------
def tiny_store_arrays(task: str = "multiclass", n: int = 50, size: int = 32, channels: int = 3,
                      n_classes: int = 3, seed: int = 0, groups: bool = True):
    """(images, labels table, meta) of a small learnable dataset in the store layout.

    Each class brightens its own horizontal band, so a tiny network can learn it in a few steps.
    """
    rng = np.random.default_rng(seed)
    if task == "binary":
        n_classes = 2
    if task == "multilabel":
        y = (rng.random((n, n_classes)) < 0.4).astype(int)
        y[np.arange(n), np.arange(n) % n_classes] = 1  # every class occurs
    else:
        y = np.eye(n_classes, dtype=int)[np.arange(n) % n_classes]
    images = rng.integers(0, 80, size=(n, size, size, channels), dtype=np.uint8)
    band = size // n_classes
    for c in range(n_classes):
        images[y[:, c] == 1, c * band:(c + 1) * band] += 150
    # a period of 5 against 2-4 classes: every split sees every class
    split = np.array(["train", "train", "train", "val", "test"] * (n // 5 + 1))[:n]
    table = pd.DataFrame({
        "index": np.arange(n), "split": split,
        "group": [f"p{i:03d}" for i in range(n)] if groups else [""] * n,
        "image_id": [f"img{i:04d}" for i in range(n)],
    })
    classes = [f"c{c}" for c in range(n_classes)]
    for c, name in enumerate(classes):
        table[name] = y[:, c]
    metrics = ["auroc", "map", "macro_f1"] if task == "multilabel" else ["accuracy", "auroc", "kappa", "macro_f1"]
    meta = {"name": f"tiny_{task}", "type": "test", "task": task, "classes": classes, "metrics": metrics,
            "primary_metric": metrics[0], "preprocess": {"resize": size, "crop": size}}
    return images, table, meta


def write_tiny_store(root, **kwargs):
    images, table, meta = tiny_store_arrays(**kwargs)

    def fill(out):
        out[:] = images

    return write_store(root, len(images), images.shape[1:3], images.shape[3], fill, table, meta)


@pytest.fixture
def store_parts():
    """Factory: ``store_parts(task=..., n=..., ...)`` -> (images, labels table, meta) of a tiny store, unwritten."""
    return tiny_store_arrays


@pytest.fixture
def make_store(tmp_path):
    """Factory: ``make_store(root=None, task=..., n=..., size=..., channels=..., n_classes=...)`` -> Store
    written with write_store (into tmp_path unless ``root`` is given)."""
    counter = iter(range(10_000))

    def make(root=None, **kwargs):
        return write_tiny_store(root or tmp_path / f"store{next(counter)}", **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A read-only 3-class multi-class store (50 images: 30 train / 10 val / 10 test, 32 px RGB), shared by the whole session."""
    return write_tiny_store(tmp_path_factory.mktemp("tiny_store") / "store", task="multiclass")


@pytest.fixture(scope="session")
def tiny_multilabel_store(tmp_path_factory):
    """A read-only 3-label multi-label store (50 images, 32 px grayscale), shared by the whole session."""
    return write_tiny_store(tmp_path_factory.mktemp("tiny_ml_store") / "store", task="multilabel", channels=1)


# -- networks and strategies -----------------------------------------------------------------------
_NETS: dict[tuple, torch.nn.Module] = {}


@pytest.fixture
def make_net():
    """Factory: ``make_net(arch="resnet_tiny", n_classes=3, seed=0)`` -> a fresh, seeded medtl Network.

    Each (arch, n_classes, seed) is built once per session and deep-copied afterwards (torchvision's VGG
    constructor allocates a full-size classifier before vgg_tiny replaces it, which takes over a second).
    """

    def make(arch: str = "resnet_tiny", n_classes: int = 3, seed: int = 0):
        key = (arch, n_classes, seed)
        if key not in _NETS:
            torch.manual_seed(seed)
            _NETS[key] = build_network(arch, n_classes)
        return copy.deepcopy(_NETS[key])

    return make


def context_for(net, store=None, *, lr: float = 1e-2, epochs: int = 4, steps_per_epoch: int = 2,
                task: str | None = None, train_targets=None, optimizer: str = "adam",
                weight_decay: float = 0.0) -> Context:
    """A strategy Context for ``net``: its current parameters are the starting point."""
    if store is not None:
        task = task or store.task
        train_targets = store.targets("train") if train_targets is None else train_targets
    n_classes = net.head_module().out_features
    task = task or "multiclass"
    if train_targets is None:
        train_targets = np.eye(n_classes, dtype=np.float32)[np.arange(12) % n_classes]
    return Context(net=net, init_state={n: p.detach().clone() for n, p in net.net.named_parameters()},
                   lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch, task=task,
                   train_targets=train_targets, optimizer=optimizer, weight_decay=weight_decay)


@pytest.fixture
def make_context():
    """Factory: ``make_context(net, store=None, lr=..., epochs=..., ...)`` -> Context."""
    return context_for


def trainer_for(strategy, store, *, epochs: int = 2, batch_size: int = 8, patience: int = 100,
                seed: int = 0, monitor: str | None = None, metrics=None, checkpoint=None) -> Trainer:
    """A CPU Trainer over ``store``'s train and val splits."""
    device = torch.device("cpu")
    train = SplitData(store.images, store.indices("train"), store.targets("train"))
    val = SplitData(store.images, store.indices("val"), store.targets("val"))
    norm = Normalizer(IMAGENET_MEAN, IMAGENET_STD, device)
    monitor = monitor or strategy.monitor or store.meta["primary_metric"]
    metrics = list(metrics or dict.fromkeys([monitor, *store.meta["metrics"]]))
    loop = LoopSettings(epochs=epochs, batch_size=batch_size, patience=patience, seed=seed, monitor=monitor,
                        metrics=metrics)
    return Trainer(strategy, train, val, norm, loop, checkpoint=checkpoint, signature="test")


@pytest.fixture
def make_trainer():
    """Factory: ``make_trainer(strategy, store, epochs=2, batch_size=8, ...)`` -> Trainer on CPU."""
    return trainer_for


@pytest.fixture
def shared_data() -> Path:
    """../shared/data next to the repository; tests using it must skip when it is absent."""
    return SHARED_DATA
