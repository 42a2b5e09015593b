"""SPFT inside Ultralytics' trainer, through its callbacks.

``on_pretrain_routine_end`` (the model, optimizer, EMA and a resumed state all exist):
find the backbone units and set the EMA decay of the strategy.
``on_train_epoch_start`` (before the trainer puts the model in train mode): set
``requires_grad`` for the epoch's stage and hand the frozen layers to the trainer's
``freeze_layer_names``, so its ``_model_train`` keeps their BatchNorm layers in eval mode --
a frozen layer then changes neither its weights nor its running statistics.

The optimizer holds every parameter from the start; a frozen one gets no gradient, and
PyTorch's optimizers skip parameters without one (no step, no weight decay), so unfreezing
needs no new optimizer and a resumed run restores the same optimizer state.

Every epoch's stage is recorded (and written to ``record_file``, which survives a resume):
the evidence that the stages happened, with the trainable parameter count of each.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from medtl.detection.models import backbone_units, layer_prefix
from medtl.io import write_json
from medtl.staging import StageSchedule

ALWAYS_FROZEN = (".dfl",)  # Ultralytics' fixed DFL projection: never trained, whatever the stage


class StageController:
    def __init__(self, schedule: StageSchedule, settings: dict, record_file: str | Path | None = None):
        self.schedule = schedule
        self.settings = settings
        self.record_file = Path(record_file) if record_file else None
        self.units: list[list[int]] | None = None
        self.records: dict[int, dict] = {}
        if self.record_file is not None and self.record_file.exists():
            self.records = {int(r["epoch"]): r for r in json.loads(self.record_file.read_text())}

    def attach(self, trainer) -> None:
        trainer.add_callback("on_pretrain_routine_end", self.setup)
        trainer.add_callback("on_train_epoch_start", self.apply)

    # -- callbacks ------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        from ultralytics.utils.torch_utils import unwrap_model

        self.units = backbone_units(unwrap_model(trainer.model), imgsz=int(trainer.args.imgsz))
        plan = self.schedule.plan(trainer.epochs, len(self.units))
        print(f"[detection] backbone units (layer indices, bottom-up): {self.units}; stages: "
              f"{[p['stage'] for p in plan]}", file=sys.stderr, flush=True)
        if trainer.ema is not None:
            trainer.ema.decay = ema_decay(self.settings)

    def apply(self, trainer) -> None:
        from ultralytics.utils.torch_utils import unwrap_model

        epoch = int(trainer.epoch)
        frozen = self.frozen_layers(epoch)
        names = [layer_prefix(i) for i in frozen] + list(ALWAYS_FROZEN)
        model = unwrap_model(trainer.model)
        for name, p in model.named_parameters():
            if p.dtype.is_floating_point:
                p.requires_grad_(not any(x in name for x in names))
        trainer.freeze_layer_names = names  # the trainer keeps BatchNorm of these in eval mode
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        record = {"epoch": epoch, "stage": self.schedule.stage_name(epoch, len(self.units)),
                  "units_unfrozen": self.schedule.n_unfrozen(epoch, len(self.units)),
                  "frozen_layers": frozen, "trainable_params": int(trainable),
                  "total_params": int(sum(p.numel() for p in model.parameters()))}
        self.records[epoch] = record
        if self.record_file is not None:
            write_json(self.record_file, self.history())
        print(f"[detection] epoch {epoch + 1}: stage {record['stage']}, frozen layers {frozen}, "
              f"{trainable} trainable parameters", file=sys.stderr, flush=True)

    # -- the schedule ---------------------------------------------------------------------------
    def frozen_layers(self, epoch: int) -> list[int]:
        """Backbone layers frozen in ``epoch``: every unit below the top ``n_unfrozen``."""
        n = self.schedule.n_unfrozen(epoch, len(self.units))
        return [i for unit in self.units[: len(self.units) - n] for i in unit]

    def history(self) -> list[dict]:
        return [self.records[e] for e in sorted(self.records)]


def ema_decay(settings: dict):
    """Ultralytics' EMA ramp ``d * (1 - exp(-updates / tau))``, or 0 (no averaging) without EMA."""
    if not settings.get("ema", True):
        return lambda updates: 0.0
    d, tau = float(settings["ema_decay"]), float(settings["ema_tau"])
    return lambda updates: d * (1 - math.exp(-updates / tau))
