"""The training loop shared by every strategy: batches, loss, evaluation,
early stopping, per-epoch history and a checkpoint that lets a killed job resume.

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
import random
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medtl import metrics as M
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


@dataclass
class Outcome:
    best_epoch: int
    epochs_run: int
    best_score: float
    history: list[dict] = field(default_factory=list)


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


def host_copy(obj):
    """``obj`` with every tensor copied to fresh host memory (containers copied, other values shared)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [host_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(host_copy(v) for v in obj)
    return obj


def head_prefix(model) -> str | None:
    """State-dict key prefix of the head of a medtl Network (None for anything else)."""
    name = getattr(model, "head_name", None)
    return f"net.{name}." if name else None


def epoch_line(epoch: int, epochs: int, stage: str, blocks: int, n_blocks: int, params: int, loss: float,
               monitor: str, score: float, best: dict, seconds: float) -> str:
    """One line per epoch in the job's log: what a person following the run wants to see."""
    return (f"[train] epoch {epoch + 1}/{epochs} | stage {stage} | trainable blocks {blocks}/{n_blocks} "
            f"({params:,} parameters) | loss {loss:.4f} | val {monitor} {score:.4f} "
            f"(best {best['score']:.4f} at epoch {best['epoch'] + 1}) | {seconds:.1f} s")


class Trainer:
    def __init__(self, strategy: Strategy, train: SplitData, val: SplitData, norm: Normalizer,
                 settings: LoopSettings, checkpoint: Path | None = None, signature: str = "",
                 features=None):
        self.s = settings
        self.strategy = strategy
        self.net = strategy.net
        self.task = strategy.ctx.task
        # the loss the strategy asks for: SPFT's eq. 6 is a per-class binary cross-entropy for every task
        self.loss_task = "multilabel" if strategy.bce_loss() else self.task
        self.train, self.val, self.norm = train, val, norm
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.signature = signature
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
        self._best: dict | None = None  # the best weights held by fit(), for _leave_pristine
        self._writer: threading.Thread | None = None
        self._last_save: float | None = None
        self._writer_error: BaseException | None = None

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

        def run():
            n_batches = max(1, self.train.n_batches(self.s.batch_size))
            start = (calls[0] % n_batches) * self.s.batch_size
            calls[0] += 1
            self.strategy.set_train_mode()
            x, y = self.train.batch(order[start:start + self.s.batch_size])
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
        for x, y in data.iterate(self.s.batch_size, order):
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

    def evaluate(self, data: SplitData, model=None) -> tuple[dict, np.ndarray]:
        model = model if model is not None else self.strategy.eval_model()
        probs = predict(model, data, self.norm, self.task, self.s.eval_batch_size, self.autocast)
        return M.compute(self.task, data.targets.numpy(), probs, self.s.metrics), probs

    def evaluate_epoch(self, epoch: int) -> tuple[dict, np.ndarray]:
        """Validation after ``epoch``: on cached features when the epoch used them."""
        if not self.cached(epoch):
            return self.evaluate(self.val)
        head = self.strategy.eval_model().head_module()
        data = self.features.splits["val"]
        probs = predict(head, data, self.features.to_device, self.task, self.s.eval_batch_size, self.autocast)
        return M.compute(self.task, data.targets.numpy(), probs, self.s.metrics), probs

    # -- the loop ----------------------------------------------------------------------------
    def stops(self, bad_epochs: int) -> bool:
        """Early stopping: ``patience`` epochs in a row without a gain in the monitored metric end the run
        (patience 5: after the 5th such epoch, as the authors' EarlyStopping does); patience 0 never stops."""
        return self.s.patience > 0 and bad_epochs >= self.s.patience

    def fit(self, wait: bool = True) -> Outcome:
        """Train with early stopping; the evaluated model ends with the best epoch's weights.

        ``wait=False`` returns while the last checkpoint may still be being written (the caller's
        final predictions overlap with it); the caller then calls :meth:`wait_for_checkpoint`
        before it removes or reads the checkpoint. After an exception, fit always waits."""
        optimizer = self.strategy.build_optimizer()
        scheduler = self.strategy.build_scheduler(optimizer)
        state = self._resume(optimizer, scheduler)
        history = state.get("history", [])
        best = state.get("best", {"score": -float("inf"), "epoch": -1, "weights": None})
        bad = state.get("bad_epochs", 0)
        start = state.get("epoch", -1) + 1
        if start and start < self.s.epochs and not self.stops(bad):
            print(f"[train] resumed from {self.checkpoint} after epoch {start - 1}", file=sys.stderr, flush=True)
        try:
            for epoch in range(start, self.s.epochs):
                if self.stops(bad):
                    break
                t0 = time.monotonic()
                train_loss = self.run_epoch(epoch, optimizer, scheduler)
                scores, probs = self.evaluate_epoch(epoch)
                self.strategy.on_validation(epoch, M.per_class_auroc(self.val.targets.numpy(), probs))
                score = scores.get(self.s.monitor, float("nan"))
                improved = np.isfinite(score) and score > best["score"]
                if improved or best["weights"] is None:
                    best = {"score": float(score) if np.isfinite(score) else -float("inf"), "epoch": epoch,
                            "weights": self._snapshot()}
                bad = 0 if improved else bad + 1
                trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
                blocks = len(self.strategy._blocks_with_grad())
                stage = self.strategy.stage(epoch)
                seconds = time.monotonic() - t0
                history.append({"epoch": epoch, "stage": stage, "train_loss": train_loss,
                                **{f"val_{k}": v for k, v in scores.items()}, "trainable_blocks": blocks,
                                "trainable_params": trainable, "seconds": seconds})
                print(epoch_line(epoch, self.s.epochs, stage, blocks, self.net.n_blocks, trainable, train_loss,
                                 self.s.monitor, score, best, seconds), file=sys.stderr, flush=True)
                last = epoch == self.s.epochs - 1 or self.stops(bad)
                if last or self._last_save is None or \
                        time.monotonic() - self._last_save >= self.s.checkpoint_interval_s:
                    self._save(epoch, optimizer, scheduler, history, best, bad)
                if self.stops(bad):
                    print(f"[train] early stop: no {self.s.monitor} gain for {bad} epochs", file=sys.stderr)
                    break
        except BaseException:
            self._wait_for_writer(quiet=True)  # the last good checkpoint is on disk for the rerun
            raise
        if wait:
            self._wait_for_writer()
        self.strategy.eval_model().load_state_dict(best["weights"])
        self._best = None
        return Outcome(best_epoch=best["epoch"], epochs_run=len(history), best_score=best["score"], history=history)

    # -- snapshots of weights ------------------------------------------------------------------
    def _snapshot(self) -> dict:
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
    def _save(self, epoch, optimizer, scheduler, history, best, bad) -> None:
        if self.checkpoint is None:
            return
        net_state = self.net.state_dict()
        saved_best = dict(best)
        if best["weights"] is not None and best["epoch"] == epoch and self.strategy.eval_model() is self.net:
            saved_best["weights"] = "current"  # the best weights are the network's: not stored twice
        # a frozen backbone is the one the job starts from (same weights file, same seed): not stored
        pristine = bool(self.pristine and head_prefix(self.net))
        if pristine:
            net_state = self._head_only(net_state, self.net)
            if isinstance(saved_best["weights"], dict):
                saved_best["weights"] = self._head_only(saved_best["weights"], self.strategy.eval_model())
        state = {
            "signature": self.signature, "epoch": epoch, "history": history, "best": saved_best, "bad_epochs": bad,
            "pristine": pristine, "net": net_state, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "strategy": self.strategy.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }
        # Written in the background while the next epoch trains: a copy on the host now (training goes on
        # changing the tensors in place), the file later; one write at a time, joined before fit() returns.
        snapshot = host_copy(state)
        self._last_save = time.monotonic()
        self._wait_for_writer()
        self._writer = threading.Thread(target=self._write, args=(snapshot,), name="checkpoint-writer")
        self._writer.start()

    def _write(self, state: dict) -> None:
        try:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.checkpoint.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(self.checkpoint)  # a kill mid-save leaves the previous checkpoint intact
        except BaseException as err:  # raised in the training thread by _wait_for_writer
            self._writer_error = err

    def wait_for_checkpoint(self) -> None:
        """Block until the last checkpoint is on disk (see ``fit(wait=False)``)."""
        self._wait_for_writer()

    def _wait_for_writer(self, quiet: bool = False) -> None:
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._writer_error is not None:
            err, self._writer_error = self._writer_error, None
            if not quiet:
                raise RuntimeError(f"writing checkpoint {self.checkpoint} failed: {err}") from err
            print(f"[train] writing checkpoint {self.checkpoint} failed: {err}", file=sys.stderr, flush=True)

    def _resume(self, optimizer, scheduler) -> dict:
        if self.checkpoint is None or not self.checkpoint.exists():
            return {}
        try:
            state = torch.load(self.checkpoint, map_location=self.strategy.ctx.device, weights_only=False)
        except Exception as err:  # a truncated file: start over rather than fail
            print(f"[train] ignoring unreadable checkpoint {self.checkpoint}: {err}", file=sys.stderr)
            return {}
        if state.get("signature") != self.signature:
            print(f"[train] checkpoint {self.checkpoint} is from other settings; starting over", file=sys.stderr)
            return {}
        pristine = bool(state.get("pristine"))
        self.net.load_state_dict(state["net"], strict=not pristine)
        self.pristine = pristine
        best = state["best"]
        if best["weights"] == "current":
            best["weights"] = copy.deepcopy(self.net.state_dict())
        elif pristine and best["weights"] is not None:  # the head was stored; the rest is the live backbone
            best["weights"] = {**self.strategy.eval_model().state_dict(), **best["weights"]}
        self._best = best["weights"]
        self.apply_freezing_for_resume(state["epoch"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state["strategy"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return state

    def apply_freezing_for_resume(self, epoch: int) -> None:
        self.strategy.apply_freezing(epoch)
