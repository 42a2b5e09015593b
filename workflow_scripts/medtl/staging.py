"""SPFT's stage schedule and the settings SPFT shares across classification, detection and segmentation:
one declaration, one meaning, one implementation for all three.

A model is split into a *head* (always trained: a classifier's new head, a detector's neck and
head, SAM's mask decoder) and an ordered list of backbone *units* (a classifier's blocks or a ViT's
transformer layers, the stride stages of a detector's backbone, the blocks of SAM's image encoder).

- Stage 1 is the first ``head_epochs`` epochs: the head trains alone.
- Stage 2 is every later epoch: the top ``top_k`` units (``"all"``: the whole backbone) are unfrozen,
  one more every ``unfreeze_every`` epochs from the top down (``progressive: true``), or all of them at
  once when stage 2 starts (``progressive: false``). ``top_k: 0`` keeps the backbone frozen: the head
  trains alone throughout (the ablation's "head only").
- Plain fine-tuning is the schedule without stage 1 in which everything trains at once
  (:meth:`StageSchedule.full`).

SPFT's other components act from stage 2 on (``components_from: stage2``, the paper's Fig. 6) or from
the first epoch (``start``): class-aware loss weights, and an EMA of the weights (eq. 7 with a fixed decay,
from a copy of the weights when the components start: :class:`medtl.fit.Ema`,
:func:`medtl.fit.ema_decay_rule`). The learning rate follows :class:`WarmupCosine` in every task
that schedules it itself (detection keeps Ultralytics' own ``cos_lr``).

Nothing here imports more than the standard library: the workflow reads the declarations while it plans.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from medtl.settings import Bool, Choice, Int, Number, Setting, Settings

#: every setting SPFT has in more than one task: what it does, whatever the task (the defaults are the task's)
SHARED: dict[str, Callable[[object], Setting]] = {
    "head_epochs": lambda d: Int(d, minimum=0, doc="stage 1: epochs that train the head alone"),
    "top_k": lambda d: Int(d, minimum=0, also=("all",),
                           doc="backbone units unfrozen in stage 2, from the top (0: the head trains alone "
                               "throughout)"),
    "unfreeze_every": lambda d: Int(d, minimum=1, doc="epochs between two unfreezings"),
    "progressive": lambda d: Bool(d, doc="unfreeze the top_k units one by one (false: all at once when stage 2 "
                                         "starts)"),
    "class_weights": lambda d: Bool(d, doc="class-aware loss weights from the training set's class frequencies "
                                           "(mean 1)"),
    "ema": lambda d: Bool(d, doc="validate, keep and test an exponential moving average of the weights"),
    "ema_decay": lambda d: Number(d, minimum=0, below=1,
                                  doc="the EMA's decay α (eq. 7, fixed, no warm-up): after every optimizer "
                                      "step θ_EMA = α θ_EMA + (1 - α) θ, from a copy of the weights when stage 2 "
                                      "starts"),
    "components_from": lambda d: Choice(d, choices=("stage2", "start"),
                                        doc="class weights and EMA from stage 2 (the paper's Fig. 6) or from the "
                                            "first epoch"),
    "encoder_lr_ratio": lambda d: Number(d, minimum=0, doc="the backbone's learning rate, as a fraction of the "
                                                           "head's"),
    "warmup_epochs": lambda d: Int(d, minimum=0, doc="linear warm-up epochs before the cosine schedule"),
    "cos_lr": lambda d: Bool(d, doc="cosine learning-rate schedule (false: the task's plain one: Ultralytics' "
                                    "linear decay to lrf in detection, constant in segmentation)"),
}


def shared(**defaults) -> Settings:
    """The shared settings named, in that order, with these defaults (and the shared meaning)."""
    unknown = set(defaults) - set(SHARED)
    if unknown:
        raise KeyError(f"not a shared SPFT setting: {sorted(unknown)} (shared: {', '.join(SHARED)})")
    return Settings(**{name: SHARED[name](default) for name, default in defaults.items()})


@dataclass(frozen=True)
class StageSchedule:
    """Which backbone units train in which epoch (see the module's docstring)."""
    head_epochs: int = 0
    top_k: int | str = "all"
    unfreeze_every: int = 1
    progressive: bool = True

    @classmethod
    def full(cls) -> "StageSchedule":
        """Plain fine-tuning: every unit from the first epoch."""
        return cls(head_epochs=0, top_k="all", progressive=False)

    @classmethod
    def from_settings(cls, settings: dict) -> "StageSchedule":
        top_k = settings.get("top_k", "all")
        if top_k != "all" and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise ValueError(f"top_k must be a number of units >= 0 or 'all', got {top_k!r}")
        every = int(settings.get("unfreeze_every", 1))
        if every < 1:
            raise ValueError(f"unfreeze_every must be >= 1, got {every}")
        return cls(head_epochs=int(settings.get("head_epochs", 0)), top_k=top_k, unfreeze_every=every,
                   progressive=bool(settings.get("progressive", True)))

    def in_stage2(self, epoch: int) -> bool:
        return epoch >= self.head_epochs

    def n_unfrozen(self, epoch: int, n_units: int) -> int:
        """How many of the ``n_units`` backbone units (counted from the top) train in ``epoch``."""
        top_k = n_units if self.top_k == "all" else min(int(self.top_k), n_units)
        if not self.in_stage2(epoch):
            return 0
        if not self.progressive:
            return top_k
        return min(top_k, 1 + (epoch - self.head_epochs) // self.unfreeze_every)

    def stage_name(self, epoch: int, n_units: int) -> str:
        n = self.n_unfrozen(epoch, n_units)
        if n == n_units:
            return "full"
        return "head" if n == 0 else f"head+top{n}"

    def plan(self, epochs: int, n_units: int) -> list[dict]:
        """One row per epoch: what the schedule says, for logs and hparams."""
        return [{"epoch": e, "stage": self.stage_name(e, n_units), "units_unfrozen": self.n_unfrozen(e, n_units)}
                for e in range(epochs)]


def components_active(settings: dict, epoch: int) -> bool:
    """Whether SPFT's class weights and EMA act in ``epoch`` (``components_from``; stage 2 when not set)."""
    if settings.get("components_from", "stage2") == "start":
        return True
    return StageSchedule.from_settings(settings).in_stage2(epoch)


@dataclass
class WarmupCosine:
    """The learning-rate factor of optimizer step ``step``: a linear warm-up over ``warmup`` steps, then
    a cosine from 1 to 0 over the remaining steps of ``total`` (``cosine: false``: 1 after the warm-up).
    A callable object rather than a closure, so that ``LambdaLR`` saves it with the scheduler's state."""
    total: int
    warmup: int = 0
    cosine: bool = True

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))))


@dataclass(frozen=True)
class DenseStrategy:
    """A registered dense-task strategy: whether it is staged, and the declaration of its settings.

    A config entry may override any default (that is how an ablation switches one component
    off) but may not add names the strategy does not know, nor values its declaration refuses.
    """
    staged: bool
    settings: Settings
    description: str = ""

    @property
    def defaults(self) -> dict:
        return dict(self.settings)

    def problems(self, settings: dict, where: str) -> list[str]:
        return self.settings.problems(settings, where)

    def resolve(self, settings: dict, where: str = "strategy") -> dict:
        return self.settings.resolve(settings, where)

    def schedule(self, resolved: dict) -> StageSchedule:
        return StageSchedule.from_settings(resolved) if self.staged else StageSchedule.full()

    def components_active(self, resolved: dict, epoch: int) -> bool:
        """Whether the strategy's EMA and class weights act in ``epoch`` (plain fine-tuning: always)."""
        return components_active(resolved, epoch) if self.staged else True


def check_strategies(kind: str, entries: dict, registry) -> list[str]:
    """Config errors of a task's ``strategies`` section against its registry."""
    errors = []
    for name, entry in (entries or {}).items():
        entry = dict(entry or {})
        kind_name = entry.pop("type", name)
        if kind_name not in registry:
            errors.append(f"{kind}.strategies.{name}: unknown strategy '{kind_name}' (set 'type' to one of: "
                          f"{', '.join(registry.names())})")
            continue
        errors += registry.get(kind_name).problems(entry, f"{kind}.strategies.{name}")
    return errors
