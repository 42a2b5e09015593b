"""The training loop shared by every strategy: batches, loss, evaluation,
early stopping, per-epoch history and a checkpoint that lets a killed job resume."""
from __future__ import annotations

import copy
import random
import sys
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


@dataclass
class Outcome:
    best_epoch: int
    epochs_run: int
    best_score: float
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def task_loss(task: str, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=weights)
    return F.cross_entropy(logits, y.argmax(dim=1), weight=weights)


def probabilities(task: str, logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict(model: torch.nn.Module, data: SplitData, norm: Normalizer, task: str, batch_size: int,
            autocast=nullcontext) -> np.ndarray:
    model.eval()
    out = []
    for x, _ in data.iterate(batch_size):
        with autocast():
            out.append(probabilities(task, model(norm(x)).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, data.targets.shape[1]))


class Trainer:
    def __init__(self, strategy: Strategy, train: SplitData, val: SplitData, norm: Normalizer,
                 settings: LoopSettings, checkpoint: Path | None = None, signature: str = ""):
        self.s = settings
        self.strategy = strategy
        self.net = strategy.net
        self.task = strategy.ctx.task
        self.train, self.val, self.norm = train, val, norm
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.signature = signature
        device = strategy.ctx.device
        self.amp = strategy.uses_amp() and device.type == "cuda"
        dtype = torch.bfloat16 if settings.amp_dtype == "bfloat16" else torch.float16
        self.autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if self.amp else nullcontext

    # -- one epoch -------------------------------------------------------------------------
    def _loss(self, x, y) -> torch.Tensor:
        with self.autocast():
            logits = self.net(self.norm(x))
        return task_loss(self.task, logits.float(), y.to(logits.device), self.strategy.class_weights())

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
            self._loss(x, y).backward()

        return run

    def run_epoch(self, epoch: int, optimizer, scheduler) -> float:
        order = self.train.shuffled(self.s.seed, epoch)
        self.strategy.on_epoch_start(epoch, optimizer, self._probe(order))
        self.strategy.set_train_mode()
        total, n = 0.0, 0
        for x, y in self.train.iterate(self.s.batch_size, order):
            loss = self._loss(x, y) + self.strategy.penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            self.strategy.after_step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        return total / max(n, 1)

    def evaluate(self, data: SplitData, model=None) -> tuple[dict, np.ndarray]:
        model = model if model is not None else self.strategy.eval_model()
        probs = predict(model, data, self.norm, self.task, self.s.eval_batch_size, self.autocast)
        return M.compute(self.task, data.targets.numpy(), probs, self.s.metrics), probs

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> Outcome:
        optimizer = self.strategy.build_optimizer()
        scheduler = self.strategy.build_scheduler(optimizer)
        state = self._resume(optimizer, scheduler)
        history = state.get("history", [])
        best = state.get("best", {"score": -float("inf"), "epoch": -1, "weights": None})
        bad = state.get("bad_epochs", 0)
        start = state.get("epoch", -1) + 1
        if start and start < self.s.epochs and bad <= self.s.patience:
            print(f"[train] resumed from {self.checkpoint} after epoch {start - 1}", file=sys.stderr, flush=True)
        for epoch in range(start, self.s.epochs):
            if bad > self.s.patience:
                break
            t0 = time.monotonic()
            train_loss = self.run_epoch(epoch, optimizer, scheduler)
            scores, probs = self.evaluate(self.val)
            self.strategy.on_validation(epoch, M.per_class_auroc(self.val.targets.numpy(), probs))
            score = scores.get(self.s.monitor, float("nan"))
            improved = np.isfinite(score) and score > best["score"]
            if improved or best["weights"] is None:
                best = {"score": float(score) if np.isfinite(score) else -float("inf"), "epoch": epoch,
                        "weights": copy.deepcopy(self.strategy.eval_model().state_dict())}
            bad = 0 if improved else bad + 1
            trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
            history.append({"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in scores.items()},
                            "trainable_params": trainable, "seconds": time.monotonic() - t0})
            print(f"[train] epoch {epoch + 1}/{self.s.epochs} loss {train_loss:.4f} "
                  f"val {self.s.monitor} {score:.4f} trainable {trainable} "
                  f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
            self._save(epoch, optimizer, scheduler, history, best, bad)
            if bad > self.s.patience:
                print(f"[train] early stop: no {self.s.monitor} gain for {bad} epochs", file=sys.stderr)
                break
        self.strategy.eval_model().load_state_dict(best["weights"])
        return Outcome(best_epoch=best["epoch"], epochs_run=len(history), best_score=best["score"], history=history)

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, epoch, optimizer, scheduler, history, best, bad) -> None:
        if self.checkpoint is None:
            return
        state = {
            "signature": self.signature, "epoch": epoch, "history": history, "best": best, "bad_epochs": bad,
            "net": self.net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "strategy": self.strategy.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)  # a kill mid-save leaves the previous checkpoint intact

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
        self.net.load_state_dict(state["net"])
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
