"""SPFT inside Ultralytics' trainer, through its callbacks: the stage schedule, the EMA and the class
weights of SPFT (:mod:`medtl.staging`, the same as classification's and segmentation's), and a resume
that ends as an uninterrupted run would.

``on_pretrain_routine_end`` (the model, optimizer, EMA and a resumed state all exist): find the
backbone units, give the EMA SPFT's decay rule, keep the class weights Ultralytics computed, and on a
resume restore the exact state of the last epoch (below).
``on_train_epoch_start`` (before the trainer puts the model in train mode and draws the epoch's
batches): seed the epoch's random draws, set ``requires_grad`` for the epoch's stage and hand the
frozen layers to the trainer's ``freeze_layer_names``, so its ``_model_train`` keeps their BatchNorm
layers in eval mode -- a frozen layer then changes neither its weights nor its running statistics;
switch the class weights and the EMA on when SPFT's components start (stage 2).
``on_fit_epoch_end`` (after Ultralytics saved ``last.pt``): save the exact state.

The optimizer holds every parameter from the start; a frozen one gets no gradient, and
PyTorch's optimizers skip parameters without one (no step, no weight decay), so unfreezing
needs no new optimizer and a resumed run restores the same optimizer state.

EMA: the evaluated, kept and tested weights are Ultralytics' ``ModelEMA``; its decay is 0 -- the EMA is the
trained weights -- before stage 2 and without EMA, so that stage 2 starts from a copy of the weights stage 1
left, and SPFT's fixed decay of eq. 7 from the first update of stage 2 on (:func:`medtl.fit.ema_decay_rule`).

Resume: Ultralytics' ``last.pt`` holds the EMA in half precision as the model to continue from (and a
half-precision optimizer state), so a run resumed from it alone continues from other weights than the
ones an uninterrupted run has. Each epoch's full state -- trained weights, EMA, optimizer, all in
float32 -- is therefore also saved by the shared :class:`medtl.fit.Checkpointer` and restored over
Ultralytics' on a resume; and every epoch's random draws (batch order, augmentations) are seeded from
(seed, epoch), so they do not depend on where the run started. With data-loading workers, the loader
is restarted every epoch for the same reason.

Every epoch's stage is recorded (and written to ``record_file``, which survives a resume):
the evidence that the stages happened, with the trainable parameter count of each.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from medtl.detection.models import backbone_units, layer_prefix
from medtl.fit import Checkpointer, ema_decay_rule
from medtl.io import write_json
from medtl.runtime import seed_everything
from medtl.staging import StageSchedule

ALWAYS_FROZEN = (".dfl",)  # Ultralytics' fixed DFL projection: never trained, whatever the stage


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's random draws: a function of (seed, epoch) only."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


class StageController:
    def __init__(self, schedule: StageSchedule, settings: dict, components_active, seed: int = 0,
                 record_file: str | Path | None = None, state: Checkpointer | None = None):
        self.schedule = schedule
        self.settings = settings
        self.components_active = components_active  # epoch -> whether EMA and class weights act
        self.seed = int(seed)
        self.record_file = Path(record_file) if record_file else None
        self.state = state
        self.units: list[list[int]] | None = None
        self.class_weights = None
        self.ema_offset: int | None = None  # EMA updates before its first stage-2 update
        self.records: dict[int, dict] = {}
        if self.record_file is not None and self.record_file.exists():
            self.records = {int(r["epoch"]): r for r in json.loads(self.record_file.read_text())}

    def attach(self, trainer) -> None:
        trainer.add_callback("on_pretrain_routine_end", self.setup)
        trainer.add_callback("on_train_epoch_start", self.apply)
        trainer.add_callback("on_fit_epoch_end", self.save)

    # -- callbacks ------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        from ultralytics.utils.torch_utils import unwrap_model

        model = unwrap_model(trainer.model)
        self.units = backbone_units(model, imgsz=int(trainer.args.imgsz))
        plan = self.schedule.plan(trainer.epochs, len(self.units))
        print(f"[detection] backbone units (layer indices, bottom-up): {self.units}; stages: "
              f"{[p['stage'] for p in plan]}", file=sys.stderr, flush=True)
        self.class_weights = getattr(model, "class_weights", None)  # Ultralytics' cls_pw weights, or None
        offsets = [r["ema_offset"] for r in self.records.values() if r.get("ema_offset") is not None]
        self.ema_offset = offsets[0] if offsets else None
        if trainer.ema is not None:
            trainer.ema.decay = self.ema_decay
        if trainer.start_epoch > 0:
            self.restore(trainer)

    def apply(self, trainer) -> None:
        from ultralytics.utils.torch_utils import unwrap_model

        epoch = int(trainer.epoch)
        self.seed_epoch(trainer, epoch)
        frozen = self.frozen_layers(epoch)
        names = [layer_prefix(i) for i in frozen] + list(ALWAYS_FROZEN)
        model = unwrap_model(trainer.model)
        for name, p in model.named_parameters():
            if p.dtype.is_floating_point:
                p.requires_grad_(not any(x in name for x in names))
        trainer.freeze_layer_names = names  # the trainer keeps BatchNorm of these in eval mode
        active = bool(self.components_active(epoch))
        for m in (model, getattr(trainer.ema, "ema", None)):  # the EMA's validation loss weighs as training's
            if m is not None:
                set_class_weights(m, self.class_weights if active else None)
        if active and self.ema_offset is None and trainer.ema is not None:
            self.ema_offset = int(trainer.ema.updates)  # the EMA holds the weights stage 1 left: eq. 7 from here
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        record = {"epoch": epoch, "stage": self.schedule.stage_name(epoch, len(self.units)),
                  "units_unfrozen": self.schedule.n_unfrozen(epoch, len(self.units)),
                  "frozen_layers": frozen, "trainable_params": int(trainable),
                  "total_params": int(sum(p.numel() for p in model.parameters())),
                  "components": active, "ema_offset": self.ema_offset}
        self.records[epoch] = record
        if self.record_file is not None:
            write_json(self.record_file, self.history())
        print(f"[detection] epoch {epoch + 1}: stage {record['stage']}, frozen layers {frozen}, "
              f"{trainable} trainable parameters", file=sys.stderr, flush=True)

    def save(self, trainer) -> None:
        """The epoch's exact state, for a resume: after every epoch, as Ultralytics' last.pt (on disk before
        the next epoch starts, so that the two always belong together)."""
        from ultralytics.utils.torch_utils import unwrap_model

        if self.state is None or not (self.state.due() or trainer.epoch + 1 >= trainer.epochs):
            return
        self.state.save({"epoch": int(trainer.epoch), "model": unwrap_model(trainer.model).state_dict(),
                         "ema": trainer.ema.ema.state_dict(), "updates": int(trainer.ema.updates),
                         "optimizer": trainer.optimizer.state_dict(), "ema_offset": self.ema_offset})
        self.state.wait()

    # -- resume and randomness ------------------------------------------------------------------
    def restore(self, trainer) -> None:
        """Over Ultralytics' resumed state, the full-precision state of the epoch it resumes after."""
        from ultralytics.utils.torch_utils import unwrap_model

        saved = self.state.load("cpu") if self.state is not None else None
        if saved is None or int(saved["epoch"]) != trainer.start_epoch - 1:
            found = None if saved is None else int(saved["epoch"]) + 1
            print(f"[detection] no exact state after epoch {trainer.start_epoch} (found: {found}); resuming from "
                  "Ultralytics' last.pt alone (its EMA weights, in half precision)", file=sys.stderr, flush=True)
            return
        unwrap_model(trainer.model).load_state_dict(saved["model"])
        trainer.ema.ema.load_state_dict(saved["ema"])
        trainer.ema.updates = int(saved["updates"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        self.ema_offset = saved["ema_offset"]
        print(f"[detection] restored the exact state after epoch {trainer.start_epoch}", file=sys.stderr, flush=True)

    def seed_epoch(self, trainer, epoch: int) -> None:
        """Seed Python, NumPy and PyTorch (augmentations) and the batch order from (seed, epoch)."""
        import torch

        seed = epoch_seed(self.seed, epoch)
        seed_everything(seed)
        loader = trainer.train_loader
        sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
        order = getattr(sampler, "sampler", None)  # the RandomSampler under the batch sampler
        if order is not None and hasattr(order, "generator"):
            order.generator = torch.Generator().manual_seed(seed)
        if getattr(loader, "num_workers", 0) > 0:  # workers would have drawn ahead with the old seeds
            loader.generator.manual_seed(seed)
            loader.reset()

    # -- the schedule ---------------------------------------------------------------------------
    def frozen_layers(self, epoch: int) -> list[int]:
        """Backbone layers frozen in ``epoch``: every unit below the top ``n_unfrozen``."""
        n = self.schedule.n_unfrozen(epoch, len(self.units))
        return [i for unit in self.units[: len(self.units) - n] for i in unit]

    def history(self) -> list[dict]:
        return [self.records[e] for e in sorted(self.records)]

    def ema_decay(self, updates: int) -> float:
        """Ultralytics' EMA calls this with its update count: SPFT's rule from stage 2, else 0 (no averaging)."""
        if not self.settings.get("ema") or self.ema_offset is None:
            return 0.0
        return self._rule(updates - self.ema_offset)

    @property
    def _rule(self):
        if not hasattr(self, "_decay_rule"):
            self._decay_rule = ema_decay_rule(float(self.settings["ema_decay"]))
        return self._decay_rule


def set_class_weights(model, weights) -> None:
    """Class weights for the loss from now on (None: none), also in a loss built already."""
    model.class_weights = weights
    criterion = getattr(model, "criterion", None)
    if criterion is not None and hasattr(criterion, "class_weights"):
        criterion.class_weights = None if weights is None else weights.view(1, 1, -1)
