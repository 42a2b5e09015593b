"""What the workflow knows about a strategy without importing PyTorch: its settings declaration, what
trains under it, whether it has epochs on a frozen backbone, and where its implementation lives.

The implementation (a :class:`medtl.strategies.base.Strategy` subclass) is imported only when a job
builds the strategy: ``STRATEGIES.get("l2_sp")(ctx, alpha=0.1)`` checks the settings against the
declaration, fills in the defaults and constructs it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from medtl.registry import DeclaredRegistry
from medtl.settings import Settings

#: the config key naming a strategy's type; accepted alongside any strategy's settings
TYPE_KEY = "type"


@dataclass(frozen=True)
class StrategySpec:
    implementation: str   # "module:Class", a Strategy subclass taking (ctx, resolved settings)
    settings: Settings
    trains: str           # what trains, in words (docs/configuration.md's strategies table)
    #: resolved settings -> whether a run has epochs that train only the head on a frozen backbone
    #: (cached backbone features can stand in for it); None: never
    frozen_backbone_when: Callable[[dict], bool] | None = None
    #: the job starts from the architecture's random initialisation whatever its ``weights`` (scratch): the job
    #: grid gives it no weights file and leaves the weights out of its cache key (rules/common.smk)
    random_init: bool = False

    @property
    def defaults(self) -> dict:
        return dict(self.settings)

    def problems(self, values: dict | None, where: str) -> list[str]:
        return self.settings.problems(values, where, ignore=(TYPE_KEY,))

    def resolve(self, values: dict | None, where: str = "settings") -> dict:
        return self.settings.resolve(values, where, ignore=(TYPE_KEY,))

    def load(self) -> type:
        module, name = self.implementation.split(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, ctx, **settings: Any):
        """The strategy for a job: settings checked against the declaration, defaults filled in. Whether its run
        has epochs on a frozen backbone comes from the declaration (``frozen_backbone_when``), the one source the
        planner reads too, so that planning and the job agree about cached features."""
        resolved = self.resolve(settings)
        strategy = self.load()(ctx, resolved)
        strategy.frozen_backbone = self.frozen_backbone and bool(self.frozen_backbone_when(resolved))
        return strategy

    # -- cached features -----------------------------------------------------------------------
    @property
    def frozen_backbone(self) -> bool:
        """Whether some settings give epochs that train only the head on a frozen backbone."""
        return self.frozen_backbone_when is not None

    def freezes_backbone_with(self, settings: dict) -> bool:
        """Whether a run with these config settings has such an epoch (LP-FT with lp_epochs 0 has none)."""
        return self.frozen_backbone and bool(self.frozen_backbone_when(self.resolve(settings)))


STRATEGIES: DeclaredRegistry[StrategySpec] = DeclaredRegistry("strategy")


def uses_frozen_features(strategy, settings: dict | None = None, frozen_bn: str | None = None) -> bool:
    """Whether a strategy (its spec, or a built strategy) has epochs that train only the head on a frozen
    backbone (``frozen_backbone``), so that cached features can replace the backbone; with ``settings``,
    whether a run with those settings has such an epoch. Only with the frozen blocks in eval mode
    (``training.frozen_bn: eval``, a built strategy's ``ctx.frozen_bn``): with their BatchNorm statistics
    adapting, the head's input changes with every batch."""
    ctx = getattr(strategy, "ctx", None)
    mode = frozen_bn or (ctx.frozen_bn if ctx is not None else "eval")
    if mode != "eval" or not getattr(strategy, "frozen_backbone", False):
        return False
    check = getattr(strategy, "freezes_backbone_with", None)
    return True if settings is None or check is None else bool(check(settings))
