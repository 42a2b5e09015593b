"""One segmentation job: (dataset, model, strategy, seed) -> Dice per structure, predictions.

The model selected on validation (mean Dice over structures, tight boxes) is evaluated on
test: Dice of every annotated (image, structure), averaged per structure, and the mean over
structures. Structures an image lacks are neither prompted nor scored.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtl.data.dense_store import load_dense_store
from medtl.fit import GPU_CHECKPOINT_INTERVAL_S
from medtl.io import atomic_path, write_json
from medtl.models.weights_declaration import DENSE_WEIGHTS, weights_settings
from medtl.runtime import resolve_device, save_torch, seed_everything, set_threads, signature
from medtl.segmentation.sam import build_sam
from medtl.segmentation.spec import MODEL_DEFAULTS, TRAINING
from medtl.segmentation.strategies import SEGMENTATION_STRATEGIES
from medtl.segmentation.trainer import SamLoopSettings, SamTuner, SegData

PRIMARY = "dice"
# what a job uses for a setting its config slice leaves out: the declaration's defaults
TRAINING_DEFAULTS = TRAINING


def scores_of(dice: np.ndarray, structures: list[str]) -> dict:
    """{dice: mean over structures, dice_<structure>: mean over the images annotated with it}."""
    with np.errstate(all="ignore"):
        per = np.nanmean(dice, axis=0) if len(dice) else np.full(len(structures), np.nan)
    out = {f"dice_{s}": (float(v) if math.isfinite(v) else None) for s, v in zip(structures, per)}
    finite = [v for v in per if math.isfinite(v)]
    return {PRIMARY: float(np.mean(finite)) if finite else None, **out}


def build_tuner(hp: dict, store, weights_file: str | None, device: torch.device, checkpoint: str | None = None,
                train_prompts: bool = False):
    """SAM, strategy and data of a job: shared by training, pretraining and the tests."""
    seed_everything(int(hp["seed"]))
    model = {**MODEL_DEFAULTS, **hp["model"]}
    t = TRAINING.unkey(hp["training"])  # a job key leaves out settings at their neutral value
    strategy = SEGMENTATION_STRATEGIES.get(hp["strategy"]["type"])
    settings = strategy.resolve(strategy.settings.unkey(hp["strategy"]["settings"]),
                                where=f"strategy '{hp['strategy']['name']}'")
    sam = build_sam(model["encoder"], int(model["img_size"]), weights_file)
    train = SegData(store.images, store.masks, store.indices("train"))
    val = SegData(store.images, store.masks, store.indices("val"))
    loop = SamLoopSettings(epochs=int(t["epochs"]), batch_size=int(t["batch_size"]), lr=float(t["lr"]),
                        weight_decay=float(t["weight_decay"]), box_jitter=float(t["box_jitter"]),
                        seed=int(hp["seed"]), patience=int(t["patience"]), eval_batch_size=int(t["eval_batch_size"]),
                        dice_weight=float(t["dice_weight"]), bce_weight=float(t["bce_weight"]), amp=bool(t["amp"]),
                        checkpoint_interval_s=GPU_CHECKPOINT_INTERVAL_S if device.type == "cuda" else 0.0,
                        train_prompts=train_prompts)
    return SamTuner(sam, settings, strategy.schedule(settings), loop, train, val, device,
                    checkpoint=Path(checkpoint) if checkpoint else None, signature=signature(hp))


def run(hp: dict, store_dir: str, out_dir: str, checkpoint: str, weights_file: str | None = None,
        threads: int = 1, hooks: list | None = None) -> dict:
    """Train, select on validation, evaluate on test; write metrics.json (last), per_image.csv,
    predictions.npz (test masks), history.csv and hparams.json into ``out_dir``."""
    set_threads(threads)
    started = time.monotonic()
    store = load_dense_store(store_dir, task="segmentation")
    device = resolve_device(hp["training"].get("device", TRAINING_DEFAULTS["device"]))
    tuner = build_tuner(hp, store, weights_file, device, checkpoint)
    tuner.on_epoch_end.extend(hooks or [])
    model = {**MODEL_DEFAULTS, **hp["model"]}
    plan = [p["stage"] for p in tuner.schedule.plan(tuner.loop.epochs, len(tuner.units))]
    print(f"[segmentation] {hp['dataset']['name']} {hp['model']['name']} ({model['encoder']} at "
          f"{model['img_size']} px) {hp['strategy']['name']} seed={hp['seed']} on {device}: "
          f"{len(tuner.train_data)} train / {len(tuner.val_data)} val images, structures {store.classes}; "
          f"encoder units {len(tuner.units)}; stages {plan}", file=sys.stderr, flush=True)
    outcome = tuner.fit()

    test = SegData(store.images, store.masks, store.indices("test"))
    result = {"val": {}, "test": {}}
    _, val_dice = tuner.predict(tuner.val_data)
    result["val"] = scores_of(val_dice, store.classes)
    test_masks, test_dice = tuner.predict(test)
    result["test"] = scores_of(test_dice, store.classes)
    per_image = pd.DataFrame([
        {"index": int(idx), "image_id": store.image_id(idx), "structure": s, "dice": float(test_dice[i, k])}
        for i, idx in enumerate(test.indices) for k, s in enumerate(store.classes) if test.present[i, k]])
    result.update(
        task="segmentation", dataset=hp["dataset"]["name"], model=hp["model"]["name"],
        strategy=hp["strategy"]["name"], seed=int(hp["seed"]), primary_metric=PRIMARY, classes=store.classes,
        best_epoch=outcome.best_epoch, epochs_run=outcome.epochs_run,
        stages=[{k: h[k] for k in ("epoch", "stage", "units_unfrozen", "trainable_params")} for h in outcome.history],
        device=str(device), seconds=round(time.monotonic() - started, 2))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "per_image.csv") as tmp:
        per_image.to_csv(tmp, index=False)
    with atomic_path(out / "predictions.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, index=test.indices, masks=test_masks, present=test.present,
                                structures=np.array(store.classes))
    with atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(outcome.history).to_csv(tmp, index=False)
    write_json(out / "hparams.json", {**hp, "strategy_resolved": tuner.settings, "signature": signature(hp),
                                      "device": str(device), "torch": torch.__version__})
    write_json(out / "metrics.json", result)  # last: its presence marks a finished job
    Path(checkpoint).unlink(missing_ok=True)
    print(f"[segmentation] done in {result['seconds']} s: test Dice {result['test']}", file=sys.stderr, flush=True)
    return result


def pretrain(model: dict, weights: dict, training: dict, store_dir: str, out: str, checkpoint: str,
             threads: int = 1) -> dict:
    """Pretrain SAM on a source store (the offline stand-in for SA-1B): every part from random weights,
    the prompt encoder included, with box prompts and plain fine-tuning; ``out`` gets the weights that
    validate best, as a SAM state dict that ``build_sam`` loads like an official checkpoint.

    ``weights`` is the model's ``{type: pretrain, dataset, epochs, lr, batch_size, seed}`` entry; what it
    leaves out comes from ``training`` (the task's, with the model's own over it)."""
    set_threads(threads)
    store = load_dense_store(store_dir, task="segmentation")
    weights = weights_settings({**weights, "type": "pretrain"}, DENSE_WEIGHTS)  # the declared defaults
    t = {**training, "epochs": int(weights["epochs"])}
    t.update({k: weights[k] for k in ("lr", "batch_size") if weights[k] is not None})
    hp = {"dataset": {"name": store.meta["name"]}, "model": {**model, "weights": {"type": "none"}},
          "strategy": {"name": "ft", "type": "ft", "settings": {}}, "training": t,
          "seed": int(weights["seed"]), "pretrain": True}
    device = resolve_device(t.get("device", TRAINING_DEFAULTS["device"]))
    tuner = build_tuner(hp, store, None, device, checkpoint, train_prompts=True)
    m = {**MODEL_DEFAULTS, **model}
    print(f"[segmentation] pretraining {m['encoder']} at {m['img_size']} px on {store.meta['name']} "
          f"({len(tuner.train_data)} train / {len(tuner.val_data)} val images, structures {store.classes}) "
          f"for {t['epochs']} epochs on {device}", file=sys.stderr, flush=True)
    outcome = tuner.fit()
    save_torch({k: v.detach().cpu() for k, v in tuner.eval_model().state_dict().items()}, out)
    Path(checkpoint).unlink(missing_ok=True)
    print(f"[segmentation] pretrained: best val Dice {outcome.best_score:.4f} at epoch {outcome.best_epoch + 1}",
          file=sys.stderr, flush=True)
    return {"best_epoch": outcome.best_epoch, "best_score": outcome.best_score, "history": outcome.history}
