"""Classification training: what one epoch does for every strategy (batches, loss, evaluation), as the
:class:`medtl.fit.Learner` of the one checkpointed fit loop (:class:`medtl.fit.FitLoop`: early stopping,
per-epoch history, the best epoch and a checkpoint that lets a killed job resume), which SAM's
fine-tuning uses too.

Cost: no host-device synchronisation inside an epoch (the loss is summed on the device; the
strategy's class weights are read once per epoch, as they only change in ``on_validation``);
bf16 autocast on CUDA (``LoopSettings.amp``); optional ``torch.compile`` of the forward pass.
In the epochs in which the strategy's backbone is frozen (LP, the LP stage of LP-FT), the head
trains and is validated on cached backbone features when the trainer has them
(:mod:`medtl.training.features`), and the best-weights snapshot and the checkpoint hold only
what those epochs can change (the head), since the rest is still the network it started from.
"""
from __future__ import annotations

import copy
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medtl import metrics as M
from medtl.fit import Checkpointer, FitLoop, Learner, Outcome  # noqa: F401  (Outcome: fit()'s result)
from medtl.strategies.base import Strategy
from medtl.training.batches import Normalizer, SplitData


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    patience: int
    seed: int
    monitor: str
    metrics: list[str]
    eval_batch_size: int = 256
    amp_dtype: str = "bfloat16"
    #: autocast on CUDA (never on CPU) for strategies without an ``amp`` setting of their own
    amp: bool = False
    #: torch.compile the network's forward pass in training (evaluation stays eager: fewer graphs)
    compile: bool = False
    #: write a checkpoint after an epoch only when the last one is at least this old (0: after every
    #: epoch); the first and the last epoch's are always written
    checkpoint_interval_s: float = 0.0
    #: the class names, for the job's log and the message of an undefined validation metric
    classes: list[str] | None = None
    #: validation metrics, besides ``monitor``, that something selects on (the job: the dataset's primary
    #: metric, on which the report selects the learning rate): undefined on validation, the job fails
    selection: tuple[str, ...] = ()


def task_loss(task: str, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean loss; ``weights`` (one per class) multiply each class's whole term: the binary cross-entropy
    of that class (multi-label, SPFT's eq. 6), or the cross-entropy of the images of that class."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y, weight=weights)
    return F.cross_entropy(logits, y.argmax(dim=1), weight=weights)


def probabilities(task: str, logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict(model: torch.nn.Module, data: SplitData, norm: Normalizer, task: str, batch_size: int,
            autocast=nullcontext) -> np.ndarray:
    """Probabilities for every row of ``data``; one transfer to the host at the end."""
    model.eval()
    out = []
    for x, _ in data.iterate(batch_size):
        with autocast():
            out.append(probabilities(task, model(norm(x)).float()))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, data.targets.shape[1]))


def compiled(net: torch.nn.Module):
    """torch.compile'd forward of ``net``. Each set of trainable blocks is its own graph (a strategy that
    unfreezes block by block compiles once per stage), so the recompilation limit is raised to allow that."""
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), 64))
    return torch.compile(net)


def head_prefix(model) -> tuple[str, ...] | None:
    """State-dict key prefixes of the head(s) of a medtl Network, for ``str.startswith`` (None for anything
    else)."""
    names = getattr(model, "head_names", None)
    return tuple(f"net.{name}." for name in names) if names else None


def epoch_line(epoch: int, epochs: int, stage: str, blocks: int, n_blocks: int, params: int, loss: float,
               monitor: str, score: float, best: dict, seconds: float) -> str:
    """One line per epoch in the job's log: what a person following the run wants to see."""
    return (f"[train] epoch {epoch + 1}/{epochs} | stage {stage} | trainable blocks {blocks}/{n_blocks} "
            f"({params:,} parameters) | loss {loss:.4f} | val {monitor} {score:.4f} "
            f"(best {best['score']:.4f} at epoch {best['epoch'] + 1}) | {seconds:.1f} s")


class Trainer(Learner):
    tag = "[train]"

    def __init__(self, strategy: Strategy, train: SplitData, val: SplitData, norm: Normalizer,
                 settings: LoopSettings, checkpoint: Path | None = None, signature: str = "",
                 features=None):
        self.s = settings
        self.monitor = settings.monitor
        self.strategy = strategy
        self.net = strategy.net
        self.task = strategy.ctx.task
        # the loss the strategy asks for: SPFT's eq. 6 is a per-class binary cross-entropy for every task
        self.loss_task = "multilabel" if strategy.bce_loss() else self.task
        self.train, self.val, self.norm = train, val, norm
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.signature = signature
        self.checkpointer: Checkpointer | None = None  # made by fit(), with the loop settings of that moment
        self.features = features
        device = strategy.ctx.device
        # a strategy with an amp setting of its own (SPFT) decides; the others follow the run's setting
        wants_amp = strategy.uses_amp() if "amp" in strategy.settings else settings.amp
        self.amp = bool(wants_amp) and device.type == "cuda"
        dtype = torch.bfloat16 if settings.amp_dtype == "bfloat16" else torch.float16
        self.autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if self.amp else nullcontext
        # the compiled training forward shares the network's parameters; strategies and evaluation use self.net
        self.forward = compiled(self.net) if settings.compile else self.net
        #: True while every epoch so far kept the backbone frozen: only the head has changed
        self.pristine = True
        self._best: dict | None = None  # the best weights held by the loop, for _leave_pristine
        self.optimizer = self.scheduler = None
        self._probs = None  # the last validation's probabilities
        self._evaluation: M.Evaluation | None = None  # the last validation's metrics, with what is undefined
        self._told = False  # the classes left out of validation's macro means are logged once

    # -- one epoch -------------------------------------------------------------------------
    def cached(self, epoch: int) -> bool:
        """Whether ``epoch`` trains and validates the head on cached backbone features."""
        return self.features is not None and self.strategy.backbone_unchanged(epoch)

    def _loss(self, x, y, weights=None, cached: bool = False) -> torch.Tensor:
        with self.autocast():
            if cached:
                logits = self.net.head_module()(self.features.to_device(x))
            else:
                logits = self.forward(self.norm(x))
        return task_loss(self.loss_task, logits.float(), y.to(logits.device, non_blocking=True), weights)

    def _probe(self, order):
        """Each call runs forward/backward on the next training batch of this epoch's order
        (wrapping around), so a strategy probing several batches sees different ones."""
        calls = [0]

        batches = self.train.chunks(self.s.batch_size, order, training=True)

        def run():
            chunk = batches[calls[0] % len(batches)]
            calls[0] += 1
            self.strategy.set_train_mode()
            x, y = self.train.batch(chunk)
            self._loss(x, y, self.strategy.class_weights()).backward()

        return run

    def run_epoch(self, epoch: int, optimizer, scheduler) -> float:
        cached = self.cached(epoch)
        if not self.strategy.backbone_unchanged(epoch):
            self._leave_pristine()
        data = self.features.splits["train"] if cached else self.train
        order = self.train.shuffled(self.s.seed, epoch)  # the same order with and without the cache
        self.strategy.on_epoch_start(epoch, optimizer, self._probe(order))
        self.strategy.set_train_mode()
        weights = self.strategy.class_weights()  # constant within an epoch: changes only in on_validation
        total = torch.zeros((), dtype=torch.float64, device=self.strategy.ctx.device)
        n = 0
        for x, y in data.iterate(self.s.batch_size, order, training=True):
            loss = self._loss(x, y, weights, cached) + self.strategy.penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            self.strategy.after_step()
            total += loss.detach().double() * len(y)  # on the device: no synchronisation per step
            n += len(y)
        return float(total) / max(n, 1)

    def _scores(self, targets: np.ndarray, probs: np.ndarray) -> dict:
        """The validation metrics (NaN where undefined); what is undefined and why is kept for :meth:`validate`."""
        self._evaluation = M.evaluate(self.task, targets, probs, self.s.metrics, self.s.classes, "val")
        return self._evaluation.scores

    def evaluate(self, data: SplitData, model=None) -> tuple[dict, np.ndarray]:
        model = model if model is not None else self.strategy.eval_model()
        probs = predict(model, data, self.norm, self.task, self.s.eval_batch_size, self.autocast)
        return self._scores(data.targets.numpy(), probs), probs

    def evaluate_epoch(self, epoch: int) -> tuple[dict, np.ndarray]:
        """Validation after ``epoch``: on cached features when the epoch used them."""
        if not self.cached(epoch):
            return self.evaluate(self.val)
        head = self.strategy.eval_model().head_module()
        data = self.features.splits["val"]
        probs = predict(head, data, self.features.to_device, self.task, self.s.eval_batch_size, self.autocast)
        return self._scores(data.targets.numpy(), probs), probs

    # -- the fit loop's questions (medtl.fit.Learner) ------------------------------------------
    def setup(self) -> None:
        self.optimizer = self.strategy.build_optimizer()
        self.scheduler = self.strategy.build_scheduler(self.optimizer)

    def train_epoch(self, epoch: int) -> float:
        return self.run_epoch(epoch, self.optimizer, self.scheduler)

    def validate(self, epoch: int) -> tuple[float, dict]:
        scores, probs = self.evaluate_epoch(epoch)
        self.strategy.on_validation(epoch, M.per_class_auroc(self.val.targets.numpy(), probs))
        evaluation = self._evaluation if self._evaluation is not None and self._evaluation.scores is scores else None
        if evaluation is not None and not self._told:  # the split is the same every epoch: said once
            for line in evaluation.messages():
                print(f"{self.tag} {line}", file=sys.stderr, flush=True)
            self._told = True
        self._check_selection(scores, evaluation, epoch)
        return float(scores[self.s.monitor]), {f"val_{k}": v for k, v in scores.items()}

    def _check_selection(self, scores: dict, evaluation: M.Evaluation | None, epoch: int) -> None:
        """Fail, saying why and what to do, when a metric that selects (the best epoch, early stopping, the
        report's learning rate) is undefined on validation: selecting on NaN would keep an arbitrary model."""
        for metric in dict.fromkeys([self.s.monitor, *self.s.selection]):
            value = scores.get(metric, math.nan)
            if value is not None and math.isfinite(value):
                continue
            if metric not in scores:
                why = f"it was not computed (validation metrics: {', '.join(scores) or 'none'})"
            else:
                why = (evaluation.undefined.get(metric) if evaluation is not None else None) or "it is NaN"
            if metric == self.s.monitor:
                role = "selects the best epoch and stops training early"
                other = "set training.monitor (or the strategy's monitor setting) to a metric defined on this split"
            else:
                role = "is the dataset's primary metric, on which the report selects the learning rate"
                other = "set the dataset's primary_metric to a metric defined on this split"
            raise M.UndefinedMetricError(
                f"validation {M.NAMES.get(metric, metric)} is undefined after epoch {epoch + 1}: {why}. It {role}, "
                f"so selecting on it would keep an arbitrary model: the job stops. Give the val split positive and "
                f"negative images of the classes (re-split the dataset: more validation images, or a split "
                f"stratified by class), or {other}{', e.g. accuracy' if metric != 'accuracy' else ''}.")

    def history_row(self, epoch: int, loss: float, scores: dict) -> dict:
        return {"epoch": epoch, "stage": self.strategy.stage(epoch), "train_loss": loss, **scores,
                "trainable_blocks": len(self.strategy._blocks_with_grad()),
                "trainable_params": sum(p.numel() for p in self.net.parameters() if p.requires_grad)}

    def log_line(self, epoch, epochs, row, score, best, seconds) -> str:
        return epoch_line(epoch, epochs, row["stage"], row["trainable_blocks"], self.net.n_blocks,
                          row["trainable_params"], row["train_loss"], self.s.monitor, score, best, seconds)

    def eval_model(self):
        return self.strategy.eval_model()

    def fit(self, wait: bool = True) -> Outcome:
        """Train with early stopping; the evaluated model ends with the best epoch's weights.

        ``wait=False`` returns while the last checkpoint may still be being written (the caller's final
        predictions overlap with it); the caller then calls :meth:`wait_for_checkpoint` before it removes
        or reads the checkpoint. After an exception, fit always waits."""
        self.checkpointer = (Checkpointer(self.checkpoint, self.signature, self.s.checkpoint_interval_s, self.tag)
                             if self.checkpoint else None)
        loop = FitLoop(self, self.s.epochs, self.s.patience, self.checkpointer, device=self.strategy.ctx.device)
        outcome = loop.fit(wait=wait)
        self._best = None
        return outcome

    def stops(self, bad_epochs: int) -> bool:
        return FitLoop(self, self.s.epochs, self.s.patience).stops(bad_epochs)

    # -- snapshots of weights ------------------------------------------------------------------
    def snapshot(self) -> dict:
        """The evaluated model's weights. While the backbone has stayed frozen only the head can have
        changed: the head is copied and the rest refers to the live, unchanged tensors (copied only if
        a later epoch is about to train them, in :meth:`_leave_pristine`)."""
        state = self.strategy.eval_model().state_dict()
        prefix = head_prefix(self.strategy.eval_model())
        if self.pristine and prefix:
            snap = {k: (v.detach().clone() if k.startswith(prefix) else v) for k, v in state.items()}
        else:
            snap = copy.deepcopy(state)
        self._best = snap
        return snap

    def _leave_pristine(self) -> None:
        if self.pristine and self._best is not None:
            for k, v in self._best.items():  # the backbone is about to train: the best snapshot gets its own copy
                self._best[k] = v.detach().clone()
        self.pristine = False

    def _head_only(self, state: dict, model) -> dict:
        prefix = head_prefix(model)
        return {k: v for k, v in state.items() if k.startswith(prefix)}

    # -- checkpoints ---------------------------------------------------------------------------
    def _stores_head_only(self) -> bool:
        """A frozen backbone is the one the job starts from (same weights file, same seed): not stored."""
        return bool(self.pristine and head_prefix(self.net))

    def pack_best(self, weights: dict, best_epoch: int, epoch: int):
        if weights is not None and best_epoch == epoch and self.strategy.eval_model() is self.net:
            return "current"  # the best weights are the network's: not stored twice
        if self._stores_head_only() and isinstance(weights, dict):
            return self._head_only(weights, self.strategy.eval_model())
        return weights

    def unpack_best(self, packed):
        if packed == "current":
            weights = copy.deepcopy(self.net.state_dict())
        elif self.pristine and packed is not None:  # the head was stored; the rest is the live backbone
            weights = {**self.strategy.eval_model().state_dict(), **packed}
        else:
            weights = packed
        self._best = weights
        return weights

    def state_dict(self) -> dict:
        pristine = self._stores_head_only()
        net_state = self.net.state_dict()
        return {"pristine": pristine, "net": self._head_only(net_state, self.net) if pristine else net_state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "strategy": self.strategy.state_dict()}

    def load_state_dict(self, state: dict, epoch: int) -> None:
        pristine = bool(state.get("pristine"))
        self.net.load_state_dict(state["net"], strict=not pristine)
        self.pristine = pristine
        self.apply_freezing_for_resume(epoch)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state["strategy"])

    def wait_for_checkpoint(self) -> None:
        """Block until the last checkpoint is on disk (see ``fit(wait=False)``)."""
        if self.checkpointer is not None:
            self.checkpointer.wait()

    def apply_freezing_for_resume(self, epoch: int) -> None:
        self.strategy.apply_freezing(epoch)
