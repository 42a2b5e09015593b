"""SAM fine-tuning: stages, differential learning rates, EMA, cosine schedule, as the
:class:`medtl.fit.Learner` of the fit loop classification uses (:class:`medtl.fit.FitLoop`:
early stopping, history, the best epoch, checkpoints and resume).

Each epoch: apply the stage (which encoder units train; :class:`medtl.staging.StageSchedule`),
shuffle the training images, prompt every annotated structure with its jittered box, step on
Dice + BCE, update the EMA from stage 2 (:class:`medtl.fit.Ema`); then score the evaluated model
(EMA when on) on validation by mean Dice with tight boxes. The loop keeps the best epoch's
weights and saves the state after each epoch (weights, optimizer, scheduler, EMA, best weights,
history, random generators), so a restarted job with the same signature resumes after the last
saved epoch and ends as an uninterrupted run would.

The optimizer holds the mask decoder (head learning rate) and the whole image encoder
(``encoder_lr_ratio`` x that) from the start; frozen parameters get no gradient, which
AdamW skips, so unfreezing needs no new optimizer and resuming restores the same one.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medtl.fit import Checkpointer, Ema, FitLoop, Learner, Outcome
from medtl.segmentation.metrics import dice, dice_bce_loss
from medtl.segmentation.prompts import jitter_boxes, mask_boxes
from medtl.segmentation.sam import FROZEN, HEAD, encoder_units, mask_logits, matches
from medtl.staging import StageSchedule, WarmupCosine, components_active


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
class SamLoopSettings:
    """The loop of a SAM / SAM 2 fine-tuning job (the classification one's: medtl.training.trainer.LoopSettings)."""
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
    #: write a checkpoint after an epoch only when the last one is at least this old (0: after every epoch)
    checkpoint_interval_s: float = 0.0
    #: train the prompt encoder too (pretraining); fine-tuning keeps it frozen
    train_prompts: bool = False


class SamTuner(Learner):
    tag = "[segmentation]"
    monitor = "dice"

    def __init__(self, sam, settings: dict, schedule: StageSchedule, loop: SamLoopSettings, train: SegData,
                 val: SegData, device: torch.device, checkpoint: Path | None = None, signature: str = ""):
        self.sam = sam.to(device)
        self.settings, self.schedule, self.loop = settings, schedule, loop
        self.train_data, self.val_data = train, val
        self.device = device
        self.units = encoder_units(sam)
        self.ema = Ema(float(settings["ema_decay"])) if settings.get("ema") else None
        self.optimizer = torch.optim.AdamW(self.param_groups(), lr=loop.lr, weight_decay=loop.weight_decay)
        self.steps_per_epoch = max(1, math.ceil(len(train) / loop.batch_size))
        steps = self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, WarmupCosine(
            total=loop.epochs * steps, warmup=int(settings.get("warmup_epochs", 0)) * steps,
            cosine=bool(settings.get("cos_lr", False))))
        self.amp = bool(loop.amp) and device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if self.amp else nullcontext
        self.checkpointer = (Checkpointer(checkpoint, signature, loop.checkpoint_interval_s, self.tag)
                             if checkpoint else None)
        self.on_epoch_end: list[Callable[[int], None]] = []  # hooks (tests stop a run here to resume it)
        self._stage: dict = {}

    # -- what trains, and how fast ---------------------------------------------------------------
    def head_prefixes(self) -> list[str]:
        return [*HEAD, *(FROZEN if self.loop.train_prompts else ())]

    def param_groups(self) -> list[dict]:
        head, encoder = [], []
        for name, p in self.sam.named_parameters():
            if matches(name, self.head_prefixes()):
                head.append(p)
            elif name.startswith("image_encoder."):
                encoder.append(p)
        ratio = float(self.settings.get("encoder_lr_ratio", 1.0))
        return [{"params": head, "lr": self.loop.lr, "name": "mask_decoder"},
                {"params": encoder, "lr": self.loop.lr * ratio, "name": "image_encoder"}]

    def trainable_prefixes(self, epoch: int) -> list[str]:
        n = self.schedule.n_unfrozen(epoch, len(self.units))
        return [*self.head_prefixes(), *(p for unit in self.units[len(self.units) - n:] for p in unit)]

    def apply_stage(self, epoch: int) -> dict:
        prefixes = self.trainable_prefixes(epoch)
        frozen = () if self.loop.train_prompts else FROZEN
        for name, p in self.sam.named_parameters():
            p.requires_grad_(matches(name, prefixes) and not matches(name, frozen))
        n = self.schedule.n_unfrozen(epoch, len(self.units))
        return {"epoch": epoch, "stage": self.schedule.stage_name(epoch, len(self.units)), "units_unfrozen": n,
                "trainable_params": int(sum(p.numel() for p in self.sam.parameters() if p.requires_grad))}

    def eval_model(self):
        return self.ema.module if self.ema is not None and self.ema.module is not None else self.sam

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
        averaging = self.ema is not None and components_active(self.settings, epoch)
        if averaging and self.ema.module is None:
            self.ema.start(self.sam)  # eq. 7's average starts as the weights stage 1 left
        self.sam.train()
        total, n = 0.0, 0
        for start in range(0, len(order), self.loop.batch_size):
            images, boxes, targets = self._batch(self.train_data, order[start:start + self.loop.batch_size], rng)
            if sum(len(b) for b in boxes) == 0:
                continue
            with self.autocast():
                logits = mask_logits(self.sam, images, boxes, frozen_encoder=frozen_encoder,
                                     frozen_prompts=not self.loop.train_prompts)
            loss = dice_bce_loss(torch.cat(logits).float(), torch.cat(targets), self.loop.dice_weight,
                                 self.loop.bce_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if averaging:
                self.ema.update(self.sam)  # eq. 7 with the fixed ema_decay
            total += float(loss.detach()) * len(images)
            n += len(images)
        return total / max(n, 1)

    @torch.no_grad()
    def predict(self, data: SegData, model=None, loss: bool = False):
        """Binary masks (n, K, S, S) from the tight boxes (zeros where not annotated) and Dice (n, K), NaN there;
        with ``loss``, also the mean Dice + BCE loss of the logits (a continuous score of the same predictions)."""
        model = model if model is not None else self.eval_model()
        model.eval()
        k = data.n_structures
        masks = np.zeros((len(data), k, data.size, data.size), np.uint8)
        scores = np.full((len(data), k), np.nan)
        total, n = 0.0, 0
        for start in range(0, len(data), self.loop.eval_batch_size):
            rows = np.arange(start, min(len(data), start + self.loop.eval_batch_size))
            images, boxes, targets = self._batch(data, rows, None)
            with self.autocast():
                logits = mask_logits(model, images, boxes)
            if loss and sum(len(b) for b in boxes):
                total += float(dice_bce_loss(torch.cat(logits).float(), torch.cat(targets), self.loop.dice_weight,
                                             self.loop.bce_weight)) * len(rows)
                n += len(rows)
            for r, lg in zip(rows, logits):
                keep = np.flatnonzero(data.present[r])
                pred = (lg.float() > 0).cpu().numpy().astype(np.uint8)
                truth = data.masks(r)
                masks[r, keep] = pred
                scores[r, keep] = [dice(p, truth[j]) for p, j in zip(pred, keep)]
        return (masks, scores, total / n if n else math.nan) if loss else (masks, scores)

    # -- the fit loop's questions (medtl.fit.Learner) -----------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        self._stage = self.apply_stage(epoch)
        return self.run_epoch(epoch)

    def validate(self, epoch: int) -> tuple[float, dict]:
        _, scores, loss = self.predict(self.val_data, loss=True)
        with np.errstate(all="ignore"):
            per = np.nanmean(scores, axis=0) if len(scores) else np.array([])
        score = float(np.nanmean(per)) if np.isfinite(per).any() else math.nan
        return score, {"val_dice": score, "val_loss": loss}

    def history_row(self, epoch: int, loss: float, scores: dict) -> dict:
        return {**self._stage, "train_loss": loss, **scores, "lr_decoder": self.optimizer.param_groups[0]["lr"],
                "lr_encoder": self.optimizer.param_groups[1]["lr"]}

    def log_line(self, epoch, epochs, row, score, best, seconds) -> str:
        return (f"{self.tag} epoch {epoch + 1}/{epochs} | stage {row['stage']} | {row['trainable_params']:,} "
                f"trainable parameters | loss {row['train_loss']:.4f} | val Dice {score:.4f} (best "
                f"{best['score']:.4f} at epoch {best['epoch'] + 1}) | {seconds:.1f} s")

    def state_dict(self) -> dict:
        return {"sam": self.sam.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: dict, epoch: int) -> None:
        self.sam.load_state_dict(state["sam"])
        self.apply_stage(epoch)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"], self.sam)

    def fit(self) -> Outcome:
        return FitLoop(self, self.loop.epochs, self.loop.patience, self.checkpointer, hooks=self.on_epoch_end,
                       device=self.device).fit()
