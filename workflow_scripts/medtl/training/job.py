"""One training job: (dataset, architecture, strategy, learning rate, seed) -> metrics."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medtl import metrics as M
from medtl.data.store import load_store
from medtl.fit import GPU_CHECKPOINT_INTERVAL_S
from medtl.io import atomic_path, write_json
from medtl.models import build_network
from medtl.models.weights import input_normalization, load_weights
from medtl.runtime import resolve_device, seed_everything, set_threads, signature
from medtl.strategies import STRATEGIES, Context
from medtl.training.batches import Normalizer, SplitData
from medtl.training.features import CachedFeatures, describe, uses_frozen_features
from medtl.training.predictions import FILE as PREDICTIONS, write_predictions
from medtl.training.trainer import LoopSettings, Outcome, Trainer, predict
from medtl.workflow.plan import job_settings

#: the keys of metrics.json that differ between two runs of the same job (the machine, its load): the rest is exact
MACHINE_DEPENDENT = ("seconds", "train_seconds", "peak_memory_mb")


def build(hp: dict, store, weights_file: str | None, device: torch.device):
    """Network, strategy and data for a job: shared by training and the benchmarks."""
    hp = job_settings(hp)
    seed_everything(int(hp["seed"]))
    net = build_network(hp["arch"]["name"], len(store.classes))
    load_weights(net, weights_file)
    net.to(device)
    training = hp["training"]
    if training["channels_last"] and device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    train = SplitData(store.images, store.indices("train"), store.targets("train"), pin=device.type == "cuda")
    val = SplitData(store.images, store.indices("val"), store.targets("val"), pin=device.type == "cuda")
    ctx = Context(
        net=net,
        init_state={n: p.detach().clone() for n, p in net.net.named_parameters()},
        lr=float(hp["lr"]), epochs=int(training["epochs"]),
        steps_per_epoch=train.n_batches(int(training["batch_size"]), training=True),
        task=store.task, train_targets=store.targets("train"),
        optimizer=training["optimizer"], weight_decay=float(training["weight_decay"]),
        device=device, frozen_bn=training["frozen_bn"], schedule=training["schedule"],
    )
    strategy_cls = STRATEGIES.get(hp["strategy"]["type"])
    strategy = strategy_cls(ctx, **hp["strategy"]["settings"])
    mean, std = input_normalization(training["normalize"], weights_file)  # 'weights': the hub encoder's own
    norm = Normalizer(mean, std, device, channels_last=bool(training["channels_last"]) and device.type == "cuda")
    return net, strategy, train, val, norm


def load_features(hp: dict, store, features_file: str | None, strategy, device: torch.device):
    """The cached backbone features of the job's (dataset, architecture, weights), when its strategy
    has frozen-backbone epochs and the rule gave them (never for weights 'none': random, per seed)."""
    if not features_file:
        return None
    if not uses_frozen_features(strategy):  # the planner read the same declaration: a mismatch is a bug, not data
        raise RuntimeError(f"the job was given cached features {features_file}, but strategy "
                           f"'{hp['strategy']['name']}' has no epochs on a frozen backbone with its settings "
                           "(frozen_backbone_when in its declaration): the planner and the job disagree")
    expect = describe(hp["arch"]["name"], hp["arch"].get("weights"), hp["training"]["normalize"])
    return CachedFeatures.load(features_file, store, expect, device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """The job's peak memory in MiB, and what was measured: on a GPU the most its tensors held
    (``torch.cuda.max_memory_allocated``, reset when the job starts); on a CPU the process's peak resident set
    (``resource.getrusage``: the Python process, libraries included)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1), "cuda max_memory_allocated"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1), "process peak RSS"


def cost(net: torch.nn.Module, outcome: Outcome, device: torch.device, train_seconds: float) -> dict:
    """What the job cost beside its scores (metrics.json, the report's cost table): the most parameters that
    trained in an epoch (history.csv's ``trainable_params``; 0 for a strategy that trains nothing), the model's
    parameters (adapters included) and their share in %, the seconds the training (or the k-NN fit) took, and the
    peak memory (:func:`peak_memory`)."""
    total = sum(p.numel() for p in net.parameters())
    trainable = max((int(row.get("trainable_params", 0)) for row in outcome.history), default=0)
    peak, measure = peak_memory(device)
    return {"trainable_params": trainable, "total_params": total,
            "trainable_percent": round(100.0 * trainable / total, 4) if total else None,
            "train_seconds": round(train_seconds, 2), "peak_memory_mb": peak, "peak_memory_of": measure}


def fit_without_training(strategy, store, features, data: dict, norm, loop: LoopSettings) -> tuple[Outcome, dict]:
    """A strategy that trains nothing (``knn``): the backbone's features of every split, from the cache (the
    ``extract_features`` rule's) or computed as it computes them, and the strategy's probabilities for the val and
    test splits; the outcome has no epoch and one history row (validation scores, 0 parameters trained)."""
    started = time.monotonic()
    if features is not None:
        x = {split: np.asarray(features.rows[store.indices(split)]) for split in data}
    else:
        x = {split: strategy.features_of(d, norm, loop.eval_batch_size) for split, d in data.items()}
    probs = strategy.fit_predict(x["train"], data["train"].targets.numpy(),
                                 {split: x[split] for split in data if split != "train"})
    scores = M.evaluate(store.task, data["val"].targets.numpy(), probs["val"], loop.metrics, loop.classes,
                        "val").scores
    row = {"epoch": 0, "stage": strategy.stage(0), "train_loss": math.nan, **{f"val_{k}": v for k, v in scores.items()},
           "trainable_blocks": 0, "trainable_params": 0, "seconds": time.monotonic() - started}
    best = scores.get(loop.monitor, math.nan)
    return Outcome(best_epoch=0, epochs_run=0, best_score=best, history=[row]), probs


def run(hp: dict, store_dir: str, weights_file: str | None, out_dir: str, checkpoint: str,
        threads: int = 1, features_file: str | None = None, compile: bool | None = None) -> dict:
    """Train, select the best epoch on validation, evaluate on test; write results into ``out_dir``.

    ``features_file``: cached backbone features (the ``extract_features`` rule's .npy) used in the
    epochs in which the strategy's backbone is frozen. ``compile``: torch.compile the forward pass
    (default: ``hp["training"]["compile"]``, false)."""
    set_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    started = time.monotonic()
    key, hp = hp, job_settings(hp)  # the cache key's settings in full: what trains, and what hparams.json records
    out = Path(out_dir)
    store = load_store(store_dir)
    device = resolve_device(hp["training"]["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the job's own peak (metrics.json: peak_memory_mb)
    net, strategy, train, val, norm = build(hp, store, weights_file, device)
    # metrics come from the job's config slice, so changing them needs no new store
    metric_names = list(hp["dataset"].get("metrics") or store.meta["metrics"])
    primary = hp["dataset"].get("primary_metric") or store.meta["primary_metric"]
    # a strategy's own monitor (SPFT: validation AUROC) first, then the study's, then the main metric
    monitor = strategy.monitor or hp["training"]["monitor"] or primary
    if primary not in metric_names:
        metric_names.insert(0, primary)
    if monitor not in metric_names:
        metric_names.append(monitor)
    training = hp["training"]
    loop = LoopSettings(epochs=int(training["epochs"]), batch_size=int(training["batch_size"]),
                        patience=int(training["patience"]), seed=int(hp["seed"]), monitor=monitor,
                        metrics=metric_names, eval_batch_size=int(training["eval_batch_size"]),
                        amp=bool(training["amp"]),
                        # a GPU epoch can take less time than writing its checkpoint (VGG-19 with Adam: 1.6 GB)
                        checkpoint_interval_s=GPU_CHECKPOINT_INTERVAL_S if device.type == "cuda" else 0.0,
                        compile=bool(training["compile"] if compile is None else compile),
                        # undefined on validation, either fails the job: selecting on NaN keeps an arbitrary model
                        classes=list(store.classes), selection=(primary,))
    features = load_features(hp, store, features_file, strategy, device)
    print(f"[train] {hp['dataset']['name']} {hp['arch']['name']} {hp['strategy']['name']} lr={hp['lr']} "
          f"seed={hp['seed']} on {device}: {len(train)} train / {len(val)} val images"
          f"{'; cached backbone features ' + str(features_file) if features else ''}", file=sys.stderr, flush=True)
    test = SplitData(store.images, store.indices("test"), store.targets("test"), pin=device.type == "cuda")
    fit_started = time.monotonic()
    if strategy.without_training:  # knn: no epochs; predictions from the backbone's features
        trainer = None
        outcome, fitted_probs = fit_without_training(strategy, store, features, {"train": train, "val": val,
                                                                                 "test": test}, norm, loop)
    else:
        trainer = Trainer(strategy, train, val, norm, loop, checkpoint=Path(checkpoint), signature=signature(key),
                          features=features)
        outcome = trainer.fit(wait=False)  # the last checkpoint is written while the final predictions run
    train_seconds = time.monotonic() - fit_started

    model = strategy.eval_model()
    # a backbone that never trained is the cached one: the head alone gives the predictions
    from_cache = features is not None and trainer is not None and trainer.pristine
    # a metric undefined on a split is null, with its reason; a class left out of a macro mean is named
    result = {"val": {}, "test": {}, "per_class": {}, "excluded_classes": {}, "undefined_metrics": {}}
    split_probs = {}  # kept for predictions.parquet
    try:
        for split, data in (("val", val), ("test", test)):
            if trainer is None:
                probs = fitted_probs[split]
            elif from_cache:
                probs = predict(model.head_module(), features.splits[split], features.to_device, store.task,
                                loop.eval_batch_size, trainer.autocast)
            else:
                probs = predict(model, data, norm, store.task, loop.eval_batch_size, trainer.autocast)
            y = data.targets.numpy()
            split_probs[split] = probs
            evaluation = M.evaluate(store.task, y, probs, metric_names, store.classes, split)
            result[split] = evaluation.json_scores()
            result["per_class"][split] = evaluation.json_per_class()
            result["excluded_classes"][split] = evaluation.json_excluded()
            result["undefined_metrics"][split] = dict(evaluation.undefined)
            if split == "test":  # validation's were logged in the first epoch
                for line in evaluation.messages():
                    print(f"[train] {line}", file=sys.stderr, flush=True)
    finally:
        if trainer is not None:
            trainer.wait_for_checkpoint()  # on disk before it is removed, or kept for a rerun after a failure
    result.update(
        dataset=hp["dataset"]["name"], arch=hp["arch"].get("key", hp["arch"]["name"]),
        strategy=hp["strategy"]["name"],
        lr=float(hp["lr"]), seed=int(hp["seed"]), monitor=monitor, primary_metric=primary,
        best_epoch=outcome.best_epoch, epochs_run=outcome.epochs_run, device=str(device),
        seconds=round(time.monotonic() - started, 2),
        **cost(net, outcome, device, train_seconds),  # trainable parameters, training seconds, peak memory
    )
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(outcome.history).to_csv(tmp, index=False)
    amp = trainer is not None and trainer.amp  # knn: no trainer
    write_json(out / "hparams.json", {**hp, "strategy_resolved": strategy.describe(), "monitor": monitor,
                                      "metrics": metric_names, "device": str(device), "amp": amp,
                                      "compile": loop.compile, "cached_features": features_file if features else None,
                                      "torch": torch.__version__, "signature": signature(key)})
    write_predictions(out / PREDICTIONS, store, split_probs)  # per image, for intervals and paired tests
    write_json(out / "metrics.json", result)  # last: its presence marks a finished job
    Path(checkpoint).unlink(missing_ok=True)
    final = result["test"][monitor]
    print(f"[train] done in {result['seconds']} s: test {monitor} "
          f"{'undefined' if final is None else f'{final:.4f}'}", file=sys.stderr, flush=True)
    return result
