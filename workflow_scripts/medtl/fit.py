"""The one checkpointed fit loop: epochs, validation, the best epoch, early stopping, per-epoch history,
and a checkpoint that lets a killed job resume and end exactly as an uninterrupted run would.

What a task trains and how is its :class:`Learner` (classification: ``medtl.training.trainer.Trainer``;
segmentation: ``medtl.segmentation.trainer.SamTuner``); :class:`FitLoop` owns the loop around it and
:class:`Checkpointer` writes the loop's state. Detection stays inside Ultralytics' trainer, with its own
loop, and uses the :class:`Checkpointer` and the EMA's decay rule from here.

:class:`Ema` is the exponential moving average SPFT evaluates in every task: its eq. 7,
θ_EMA ← α θ_EMA + (1 − α) θ with a fixed α (:func:`ema_decay`), started as a copy of the weights when stage 2
begins (:meth:`Ema.start`) and updated after every optimizer step from then on.
"""
from __future__ import annotations

import copy
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from medtl.io import WriteError, temporaries
from medtl.runtime import rng_state, save_torch, set_rng_state

#: on a GPU a checkpoint is written at most this often (plus the last epoch's): a killed job loses at
#: most this much training; on a CPU after every epoch
GPU_CHECKPOINT_INTERVAL_S = 120.0


def ema_decay(decay: float, t: int) -> float:
    """The decay α of the ``t``-th EMA update (t = 1, 2, ... after :meth:`Ema.start`): SPFT's eq. 7 has one fixed
    α ("the decay factor controlling the contribution of historical parameters"), no warm-up."""
    return float(decay)


def ema_decay_rule(decay: float) -> Callable[[int], float]:
    """The decay of the ``t``-th EMA update, exactly as :class:`Ema` computes it, for code that keeps another
    EMA object (Ultralytics' ``ModelEMA`` in detection, whose average holds the trained weights until stage 2)."""
    return lambda t: ema_decay(decay, t)


class Ema:
    """SPFT's eq. 7: an average of a model's weights (parameters and floating-point buffers, e.g. BatchNorm
    statistics; integer buffers are copied), θ_EMA ← α θ_EMA + (1 − α) θ after every update with a fixed α,
    starting from a copy of the weights at :meth:`start` (an :meth:`update` before any start starts it
    from the weights it is given)."""

    def __init__(self, decay: float):
        self.decay = float(decay)
        self.module: torch.nn.Module | None = None
        self.updates = 0

    def start(self, model) -> None:
        """θ_EMA ← a copy of ``model``'s weights now (SPFT: when stage 2 begins)."""
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.updates = 0

    @torch.no_grad()
    def update(self, model) -> None:
        if self.module is None:
            self.start(model)
        self.updates += 1
        d = ema_decay(self.decay, self.updates)
        live = model.state_dict()
        average, current = [], []
        for name, avg in self.module.state_dict().items():
            if avg.is_floating_point():
                average.append(avg)
                current.append(live[name].detach().to(avg.dtype))
            else:
                avg.copy_(live[name])
        if average:  # α e + (1 − α) θ written as e + (1 − α)(θ − e): a weight that did not move stays exact
            torch._foreach_lerp_(average, current, 1.0 - d)

    def decay_now(self) -> float | None:
        """The decay the last update used (None before the first)."""
        return ema_decay(self.decay, self.updates) if self.updates else None

    def state_dict(self) -> dict:
        return {"module": None if self.module is None else self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict, model) -> None:
        """Restore from :meth:`state_dict`; ``model`` gives the average's architecture."""
        self.module = None
        if state.get("module") is not None:
            self.start(model)
            self.module.load_state_dict(state["module"])
        self.updates = int(state.get("updates", 0))


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


class Checkpointer:
    """Writes a job's state to one file, atomically and in the background, and reads it back.

    ``save`` copies the state to host memory at once (training goes on changing the tensors in place) and
    writes the file in a thread while the next epoch trains; one write at a time. ``due()`` says whether
    the last write is at least ``interval_s`` old. ``load`` returns the saved state, or None when there
    is none, it cannot be read (a truncated file: start over rather than fail) or it was written with
    another signature (other settings)."""

    def __init__(self, path: str | Path, signature: str, interval_s: float = 0.0, tag: str = "[train]"):
        self.path = Path(path)
        self.signature = signature
        self.interval_s = float(interval_s)
        self.tag = tag
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last: float | None = None

    def due(self) -> bool:
        return self._last is None or time.monotonic() - self._last >= self.interval_s

    def save(self, state: dict) -> None:
        snapshot = host_copy({**state, "signature": self.signature})
        self._last = time.monotonic()
        self.wait()
        self._writer = threading.Thread(target=self._write, args=(snapshot,), name="checkpoint-writer")
        self._writer.start()

    def _write(self, state: dict) -> None:
        try:
            save_torch(state, self.path)  # a kill mid-save leaves the previous checkpoint intact
        except BaseException as err:  # raised in the training thread by wait()
            self._error = err

    def wait(self, quiet: bool = False) -> None:
        """Block until the last write is on disk; raise its error (``quiet``: only print it)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._error is not None:
            err, self._error = self._error, None
            if not quiet:
                if isinstance(err, WriteError):  # already one sentence naming the checkpoint and why
                    raise err
                raise RuntimeError(f"writing checkpoint {self.path} failed: {err}") from err
            what = err if isinstance(err, WriteError) else f"writing checkpoint {self.path} failed: {err}"
            print(f"{self.tag} {what}", file=sys.stderr, flush=True)

    def load(self, device: Any = "cpu") -> dict | None:
        self.remove_stale_temporaries()
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=False)
        except Exception as err:
            print(f"{self.tag} ignoring unreadable checkpoint {self.path}: {err}", file=sys.stderr, flush=True)
            return None
        if state.get("signature") != self.signature:
            print(f"{self.tag} checkpoint {self.path} is from other settings; starting over", file=sys.stderr,
                  flush=True)
            return None
        return state

    def remove(self) -> None:
        self.wait(quiet=True)
        self.path.unlink(missing_ok=True)
        self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> None:
        """Delete the half-written checkpoints (``.<name>.<random>.tmp`` beside it) that a writer killed mid-save
        left: a job's checkpoint is its own, so with no write under way here none of them can be in use.
        Called when a job starts (:meth:`load`); a ResNet-50 checkpoint with Adam's state is 282 MB."""
        if self._writer is not None:
            return
        for tmp in temporaries(self.path):
            try:
                size = tmp.stat().st_size
                tmp.unlink()
            except OSError:
                continue
            print(f"{self.tag} removed {tmp} ({size / 2**20:.1f} MB), a checkpoint write cut off by a kill",
                  file=sys.stderr, flush=True)


@dataclass
class Outcome:
    best_epoch: int
    epochs_run: int
    best_score: float
    history: list[dict] = field(default_factory=list)


class Learner:
    """What :class:`FitLoop` asks of a task. The loop calls, in order: :meth:`setup` once (then, when it
    resumes, :meth:`load_state_dict` and :meth:`unpack_best`), and each epoch :meth:`train_epoch`,
    :meth:`validate` and :meth:`history_row`; :meth:`snapshot` when the epoch is the best so far;
    :meth:`state_dict` and :meth:`pack_best` when it saves; :meth:`restore` with the best weights at the end."""
    tag = "[train]"
    monitor = "score"

    def setup(self) -> None:
        """Build what the state holds (optimizer, scheduler, ...), before a resume restores it."""

    def train_epoch(self, epoch: int) -> float:
        """Train one epoch; the mean training loss."""
        raise NotImplementedError

    def validate(self, epoch: int) -> tuple[float, dict]:
        """(the monitored score, higher is better; NaN when undefined, the history's validation columns)."""
        raise NotImplementedError

    def history_row(self, epoch: int, loss: float, scores: dict) -> dict:
        return {"epoch": epoch, "train_loss": loss, **scores}

    def log_line(self, epoch: int, epochs: int, row: dict, score: float, best: dict, seconds: float) -> str:
        return (f"{self.tag} epoch {epoch + 1}/{epochs} | stage {row.get('stage', '')} | loss {row['train_loss']:.4f} "
                f"| val {self.monitor} {score:.4f} (best {best['score']:.4f} at epoch {best['epoch'] + 1}) | "
                f"{seconds:.1f} s")

    def eval_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def snapshot(self) -> dict:
        """The evaluated model's weights now, kept as the best so far."""
        return copy.deepcopy(self.eval_model().state_dict())

    def restore(self, weights: dict) -> None:
        self.eval_model().load_state_dict(weights)

    def pack_best(self, weights: dict, best_epoch: int, epoch: int) -> Any:
        """The best weights as the checkpoint stores them (a learner may store less: see the classification trainer)."""
        return weights

    def unpack_best(self, packed: Any) -> dict:
        return packed

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict, epoch: int) -> None:
        """Restore :meth:`state_dict`'s state as it was after ``epoch``."""
        raise NotImplementedError


class FitLoop:
    """Train ``learner`` for up to ``epochs`` epochs; the evaluated model ends with the best epoch's weights.

    Early stopping: ``patience`` epochs in a row without a gain in the monitored score end the run
    (patience 5: after the 5th such epoch, as the SPFT authors' EarlyStopping does); 0 never stops.
    With a ``checkpointer``, the state after an epoch is saved (the first and the last always, the others
    when ``checkpointer.due()``), and a later fit with the same signature resumes after the saved epoch:
    weights, optimizer, scheduler, the learner's own state, history, best weights and the random
    generators, so the result is that of an uninterrupted run. ``hooks`` run after each epoch (tests stop
    a run there)."""

    def __init__(self, learner: Learner, epochs: int, patience: int, checkpointer: Checkpointer | None = None,
                 hooks: list[Callable[[int], None]] | None = None, device: Any = "cpu"):
        self.learner = learner
        self.epochs = int(epochs)
        self.patience = int(patience)
        self.checkpointer = checkpointer
        self.hooks = hooks if hooks is not None else []
        self.device = device

    def stops(self, bad_epochs: int) -> bool:
        return self.patience > 0 and bad_epochs >= self.patience

    def _resume(self) -> dict:
        state = self.checkpointer.load(self.device) if self.checkpointer is not None else None
        if state is None:
            return {}
        if "learner" not in state:  # written before this loop existed: the same settings, another layout
            print(f"{self.learner.tag} checkpoint {self.checkpointer.path} has an older layout; starting over",
                  file=sys.stderr, flush=True)
            return {}
        self.learner.load_state_dict(state["learner"], state["epoch"])
        best = dict(state["best"])
        best["weights"] = self.learner.unpack_best(best["weights"])
        set_rng_state(state["rng"])
        return {**state, "best": best}

    def _save(self, epoch: int, history: list, best: dict, bad: int) -> None:
        packed = {**best, "weights": self.learner.pack_best(best["weights"], best["epoch"], epoch)}
        self.checkpointer.save({"epoch": epoch, "history": history, "best": packed, "bad_epochs": bad,
                                "learner": self.learner.state_dict(), "rng": rng_state()})

    def fit(self, wait: bool = True) -> Outcome:
        """``wait=False`` returns while the last checkpoint may still be being written (the caller's final
        predictions overlap with it); the caller then calls ``checkpointer.wait()`` before it removes or
        reads the checkpoint. After an exception, fit always waits."""
        learner = self.learner
        learner.setup()
        state = self._resume()
        history = state.get("history", [])
        best = state.get("best", {"score": -math.inf, "epoch": -1, "weights": None})
        bad = state.get("bad_epochs", 0)
        start = state.get("epoch", -1) + 1
        if start and start < self.epochs and not self.stops(bad):
            print(f"{learner.tag} resumed from {self.checkpointer.path} after epoch {start - 1}", file=sys.stderr,
                  flush=True)
        try:
            for epoch in range(start, self.epochs):
                if self.stops(bad):
                    break
                t0 = time.monotonic()
                loss = learner.train_epoch(epoch)
                score, scores = learner.validate(epoch)
                improved = math.isfinite(score) and score > best["score"]
                if improved or best["weights"] is None:
                    best = {"score": float(score) if math.isfinite(score) else -math.inf, "epoch": epoch,
                            "weights": learner.snapshot()}
                bad = 0 if improved else bad + 1
                row = learner.history_row(epoch, loss, scores)
                seconds = time.monotonic() - t0
                history.append({**row, "seconds": seconds})
                print(learner.log_line(epoch, self.epochs, row, score, best, seconds), file=sys.stderr, flush=True)
                last = epoch == self.epochs - 1 or self.stops(bad)
                if self.checkpointer is not None and (last or self.checkpointer.due()):
                    self._save(epoch, history, best, bad)
                for hook in self.hooks:
                    hook(epoch)
                if self.stops(bad):
                    print(f"{learner.tag} early stop: no {learner.monitor} gain for {bad} epochs", file=sys.stderr,
                          flush=True)
                    break
        except BaseException:
            if self.checkpointer is not None:
                self.checkpointer.wait(quiet=True)  # the last good checkpoint is on disk for the rerun
            raise
        if wait and self.checkpointer is not None:
            self.checkpointer.wait()
        learner.restore(best["weights"])
        return Outcome(best_epoch=best["epoch"], epochs_run=len(history), best_score=best["score"], history=history)
