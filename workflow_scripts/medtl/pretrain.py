"""Pretraining an architecture on a source dataset of the pipeline: the offline
stand-in for ImageNet weights, trained from scratch with full fine-tuning."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from medtl.data.store import load_store
from medtl.models.weights import save_backbone
from medtl.models.weights_declaration import weights_settings
from medtl.runtime import resolve_device, set_threads
from medtl.training.job import build
from medtl.training.trainer import LoopSettings, Trainer


def pretrain(arch: str, settings: dict, training: dict, store_dir: str, out: str, checkpoint: str,
             threads: int = 1) -> None:
    set_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    store = load_store(store_dir)
    settings = weights_settings({**settings, "type": "pretrain"})  # declared defaults: medtl.models.weights_declaration
    epochs = int(settings["epochs"])
    hp = {"seed": int(settings["seed"]), "lr": float(settings["lr"]),
          "arch": {"name": arch}, "strategy": {"type": "ft", "settings": {}},
          "training": {**training, "epochs": epochs, "batch_size": int(settings["batch_size"]),
                       "patience": epochs, "monitor": None}}
    device = resolve_device(hp["training"].get("device", "auto"))
    net, strategy, train, val, norm = build(hp, store, None, device)
    monitor = store.meta["primary_metric"]
    loop = LoopSettings(epochs=epochs, batch_size=hp["training"]["batch_size"], patience=epochs, seed=hp["seed"],
                        monitor=monitor, metrics=[monitor])
    print(f"[pretrain] {arch} on {store.meta['name']} for {epochs} epochs", file=sys.stderr, flush=True)
    outcome = Trainer(strategy, train, val, norm, loop, checkpoint=Path(checkpoint), signature=str(hp)).fit()
    print(f"[pretrain] best val {monitor} {outcome.best_score:.4f} at epoch {outcome.best_epoch + 1}",
          file=sys.stderr, flush=True)
    save_backbone({k: v.cpu() for k, v in net.backbone_state().items()}, out)
    Path(checkpoint).unlink(missing_ok=True)
