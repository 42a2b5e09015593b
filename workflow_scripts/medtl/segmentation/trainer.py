"""The SAM fine-tuning loop: stages, differential learning rates, EMA, cosine, checkpoints.

Each epoch: apply the stage (which encoder units train), shuffle the training images, prompt
every annotated structure with its jittered box, step on Dice + BCE, update the EMA; then
score the evaluated model (EMA when on) on validation by mean Dice with tight boxes and keep
its weights when that is the best so far. The state after each epoch -- weights, optimizer,
scheduler, EMA, best weights, history, random generators -- is saved atomically, and a
restarted job with the same signature resumes after the last saved epoch.

The optimizer holds the mask decoder (head learning rate) and the whole image encoder
(``encoder_lr_ratio`` x that) from the start; frozen parameters get no gradient, which
AdamW skips, so unfreezing needs no new optimizer and resuming restores the same one.
"""
from __future__ import annotations

import copy
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from medtl.segmentation.metrics import dice, dice_bce_loss
from medtl.segmentation.prompts import jitter_boxes, mask_boxes
from medtl.segmentation.sam import FROZEN, HEAD, encoder_units, mask_logits, matches
from medtl.staging import StageSchedule


def ema_avg_fn(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n) / (10 + n)) over the n updates so far:
    with a fixed decay, a short fine-tuning run would be averaged mostly with its starting weights."""
    def avg(averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * d + current * (1.0 - d)

    return avg


class SegData:
    """One split of a segmentation store: its images and masks (read from the memory-mapped store
    batch by batch, never all at once) and the tight box of every annotated structure."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, indices: np.ndarray):
        self.indices = np.asarray(indices)
        self._images, self._masks = images, masks
        boxes = [mask_boxes(masks[i]) for i in self.indices]
        self.boxes = np.stack([b for b, _ in boxes]) if boxes else np.zeros((0, masks.shape[1], 4), np.float32)
        self.present = np.stack([p for _, p in boxes]) if boxes else np.zeros((0, masks.shape[1]), bool)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def size(self) -> int:
        return int(self._images.shape[1])

    @property
    def n_structures(self) -> int:
        return int(self._masks.shape[1])

    def images(self, rows) -> np.ndarray:
        return np.asarray(self._images[self.indices[rows]])

    def masks(self, row: int) -> np.ndarray:
        return np.asarray(self._masks[self.indices[row]])


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    box_jitter: float
    seed: int
    patience: int = 1000
    eval_batch_size: int = 16
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    amp: bool = True


@dataclass
class Outcome:
    best_epoch: int
    epochs_run: int
    best_score: float
    history: list[dict] = field(default_factory=list)


class SamTuner:
    def __init__(self, sam, settings: dict, schedule: StageSchedule, loop: LoopSettings, train: SegData,
                 val: SegData, device: torch.device, checkpoint: Path | None = None, signature: str = ""):
        self.sam = sam.to(device)
        self.settings, self.schedule, self.loop = settings, schedule, loop
        self.train_data, self.val_data = train, val
        self.device = device
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.signature = signature
        self.units = encoder_units(sam)
        self.ema = (AveragedModel(self.sam, avg_fn=ema_avg_fn(float(settings["ema_decay"])), use_buffers=True)
                    if settings["ema"] else None)
        self.optimizer = torch.optim.AdamW(self.param_groups(), lr=loop.lr, weight_decay=loop.weight_decay)
        self.steps_per_epoch = max(1, math.ceil(len(train) / loop.batch_size))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.amp = bool(loop.amp) and device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if self.amp else nullcontext
        self.on_epoch_end: list[Callable[[int], None]] = []  # hooks (tests stop a run here to resume it)

    # -- what trains, and how fast ---------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        head, encoder = [], []
        for name, p in self.sam.named_parameters():
            if matches(name, HEAD):
                head.append(p)
            elif name.startswith("image_encoder."):
                encoder.append(p)
        ratio = float(self.settings["encoder_lr_ratio"])
        return [{"params": head, "lr": self.loop.lr, "name": "mask_decoder"},
                {"params": encoder, "lr": self.loop.lr * ratio, "name": "image_encoder"}]

    def lr_factor(self, step: int) -> float:
        warmup = int(self.settings["warmup_epochs"]) * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if not self.settings["cos_lr"]:
            return 1.0
        total = max(1, self.loop.epochs * self.steps_per_epoch - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / total)))

    def trainable_prefixes(self, epoch: int) -> list[str]:
        n = self.schedule.n_unfrozen(epoch, len(self.units))
        return [*HEAD, *(p for unit in self.units[len(self.units) - n:] for p in unit)]

    def apply_stage(self, epoch: int) -> dict:
        prefixes = self.trainable_prefixes(epoch)
        for name, p in self.sam.named_parameters():
            p.requires_grad_(matches(name, prefixes) and not matches(name, FROZEN))
        n = self.schedule.n_unfrozen(epoch, len(self.units))
        return {"epoch": epoch, "stage": self.schedule.stage_name(epoch, len(self.units)), "units_unfrozen": n,
                "trainable_params": int(sum(p.numel() for p in self.sam.parameters() if p.requires_grad))}

    def eval_model(self):
        return self.ema.module if self.ema is not None else self.sam

    # -- one epoch -------------------------------------------------------------------------------
    def _batch(self, data: SegData, rows: np.ndarray, rng: np.random.Generator | None):
        images = torch.from_numpy(data.images(rows)).to(self.device)
        boxes, targets = [], []
        for r in rows:
            keep = np.flatnonzero(data.present[r])
            b = data.boxes[r][keep]
            if rng is not None:
                b = jitter_boxes(b, data.size, self.loop.box_jitter, rng)
            boxes.append(torch.from_numpy(np.asarray(b, np.float32)).to(self.device))
            targets.append(torch.from_numpy(data.masks(r)[keep]).to(self.device))
        return images, boxes, targets

    def run_epoch(self, epoch: int) -> float:
        rng = np.random.default_rng([self.loop.seed, epoch])  # same order and jitter after a resume
        order = rng.permutation(len(self.train_data))
        frozen_encoder = self.schedule.n_unfrozen(epoch, len(self.units)) == 0
        self.sam.train()
        total, n = 0.0, 0
        for start in range(0, len(order), self.loop.batch_size):
            images, boxes, targets = self._batch(self.train_data, order[start:start + self.loop.batch_size], rng)
            if sum(len(b) for b in boxes) == 0:
                continue
            with self.autocast():
                logits = mask_logits(self.sam, images, boxes, frozen_encoder=frozen_encoder)
            loss = dice_bce_loss(torch.cat(logits).float(), torch.cat(targets), self.loop.dice_weight,
                                 self.loop.bce_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.sam)
            total += float(loss.detach()) * len(images)
            n += len(images)
        return total / max(n, 1)

    @torch.no_grad()
    def predict(self, data: SegData, model=None) -> tuple[np.ndarray, np.ndarray]:
        """Binary masks (n, K, S, S) from the tight boxes (zeros where not annotated) and Dice (n, K), NaN there."""
        model = model if model is not None else self.eval_model()
        model.eval()
        k = data.n_structures
        masks = np.zeros((len(data), k, data.size, data.size), np.uint8)
        scores = np.full((len(data), k), np.nan)
        for start in range(0, len(data), self.loop.eval_batch_size):
            rows = np.arange(start, min(len(data), start + self.loop.eval_batch_size))
            images, boxes, _ = self._batch(data, rows, None)
            with self.autocast():
                logits = mask_logits(model, images, boxes)
            for r, lg in zip(rows, logits):
                keep = np.flatnonzero(data.present[r])
                pred = (lg.float() > 0).cpu().numpy().astype(np.uint8)
                truth = data.masks(r)
                masks[r, keep] = pred
                scores[r, keep] = [dice(p, truth[j]) for p, j in zip(pred, keep)]
        return masks, scores

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> Outcome:
        state = self._resume()
        history = state.get("history", [])
        best = state.get("best", {"score": -math.inf, "epoch": -1, "weights": None})
        bad = state.get("bad_epochs", 0)
        start = state.get("epoch", -1) + 1
        if start:
            print(f"[segmentation] resumed from {self.checkpoint} after epoch {start}", file=sys.stderr, flush=True)
        for epoch in range(start, self.loop.epochs):
            if bad > self.loop.patience:
                break
            t0 = time.monotonic()
            stage = self.apply_stage(epoch)
            loss = self.run_epoch(epoch)
            _, scores = self.predict(self.val_data)
            per = np.nanmean(scores, axis=0) if len(scores) else np.array([])
            score = float(np.nanmean(per)) if np.isfinite(per).any() else math.nan
            improved = math.isfinite(score) and score > best["score"]
            if improved or best["weights"] is None:
                best = {"score": score if math.isfinite(score) else -math.inf, "epoch": epoch,
                        "weights": copy.deepcopy(self.eval_model().state_dict())}
            bad = 0 if improved else bad + 1
            history.append({**stage, "train_loss": loss, "val_dice": score,
                            "lr_decoder": self.optimizer.param_groups[0]["lr"],
                            "lr_encoder": self.optimizer.param_groups[1]["lr"], "seconds": time.monotonic() - t0})
            print(f"[segmentation] epoch {epoch + 1}/{self.loop.epochs} stage {stage['stage']} "
                  f"({stage['trainable_params']} trainable) loss {loss:.4f} val Dice {score:.4f} "
                  f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
            self._save(epoch, history, best, bad)
            for hook in self.on_epoch_end:
                hook(epoch)
        self.eval_model().load_state_dict(best["weights"])
        return Outcome(best_epoch=best["epoch"], epochs_run=len(history), best_score=best["score"], history=history)

    # -- checkpoints -------------------------------------------------------------------------------
    def _save(self, epoch: int, history: list, best: dict, bad: int) -> None:
        if self.checkpoint is None:
            return
        state = {"signature": self.signature, "epoch": epoch, "history": history, "best": best, "bad_epochs": bad,
                 "sam": self.sam.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "ema": self.ema.state_dict() if self.ema is not None else None,
                 "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)  # a kill mid-save leaves the previous checkpoint intact

    def _resume(self) -> dict:
        if self.checkpoint is None or not self.checkpoint.exists():
            return {}
        try:
            state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
        except Exception as err:  # a truncated file: start over rather than fail
            print(f"[segmentation] ignoring unreadable checkpoint {self.checkpoint}: {err}", file=sys.stderr)
            return {}
        if state.get("signature") != self.signature:
            print(f"[segmentation] checkpoint {self.checkpoint} is from other settings; starting over",
                  file=sys.stderr)
            return {}
        self.sam.load_state_dict(state["sam"])
        self.apply_stage(state["epoch"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return state
