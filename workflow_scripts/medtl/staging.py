"""Which backbone units train in which epoch: the stage schedule shared by the dense tasks.

A model is split into a *head* (always trained: detection neck + head, SAM's mask decoder)
and an ordered list of backbone *units* (stride stages of a detector's backbone, blocks of
SAM's image encoder). Plain fine-tuning trains everything from the first epoch. SPFT trains
the head alone for ``head_epochs`` epochs, then unfreezes one more unit from the top (the
deepest) every ``unfreeze_every`` epochs, up to ``top_k`` units (``"all"``: the whole
backbone); ``progressive: false`` unfreezes all ``top_k`` at once after the head stage.

The same settings names as the classification SPFT (``medtl.strategies.spft``), so a study
reads the same way across tasks. Each task registers its strategies as :class:`DenseStrategy`
entries (``medtl.detection.strategies``, ``medtl.segmentation.strategies``): whether the
strategy is staged, and the declaration of its settings (:mod:`medtl.settings`).
"""
from __future__ import annotations

from dataclasses import dataclass

from medtl.settings import Bool, Int, Settings


def schedule_settings(head_epochs: int = 0, top_k: int | str = "all") -> Settings:
    """The schedule's settings, shared by every dense strategy (plain fine-tuning ignores them), with a
    strategy's own defaults."""
    return Settings(
        head_epochs=Int(head_epochs, minimum=0, doc="epochs that train the head alone"),
        top_k=Int(top_k, minimum=0, also=("all",), doc="backbone units unfrozen after the head stage, from the top"),
        unfreeze_every=Int(1, minimum=1, doc="epochs between two unfreezings"),
        progressive=Bool(True, doc="unfreeze the top_k units one by one (false: all at once)"),
    )


@dataclass(frozen=True)
class StageSchedule:
    staged: bool = False          # False: plain fine-tuning, every unit trains from epoch 0
    head_epochs: int = 0
    top_k: int | str = "all"
    unfreeze_every: int = 1
    progressive: bool = True

    @classmethod
    def from_settings(cls, settings: dict, staged: bool) -> "StageSchedule":
        top_k = settings.get("top_k", "all")
        if top_k != "all" and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise ValueError(f"top_k must be a number of units >= 0 or 'all', got {top_k!r}")
        every = int(settings.get("unfreeze_every", 1))
        if every < 1:
            raise ValueError(f"unfreeze_every must be >= 1, got {every}")
        return cls(staged=staged, head_epochs=int(settings.get("head_epochs", 0)),
                   top_k=top_k, unfreeze_every=every, progressive=bool(settings.get("progressive", True)))

    def n_unfrozen(self, epoch: int, n_units: int) -> int:
        """How many of the ``n_units`` backbone units (counted from the top) train in ``epoch``."""
        if not self.staged:
            return n_units
        top_k = n_units if self.top_k == "all" else min(int(self.top_k), n_units)
        if epoch < self.head_epochs:
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
        return StageSchedule.from_settings(resolved, staged=self.staged)


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
