"""Merging peft adapters back into the layers they adapt: a network's own parameter names, whatever a
strategy (:mod:`medtl.strategies.peft_adapters`) added to it. Here, below the strategies, so that
:class:`medtl.models.network.Network` can hand on plain weights without importing a strategy."""
from __future__ import annotations

import copy

from torch import nn


def merged_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every peft adapter merged into the weight it adapts and the plain layer put
    back in its place: the same function (up to rounding), under the model's own parameter names."""
    return merge_adapters(copy.deepcopy(module))


def merge_adapters(out: nn.Module) -> nn.Module:
    """:func:`merged_copy` in place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, layer in list(out.named_modules()):
        if isinstance(layer, BaseTunerLayer):
            layer.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, child, layer.get_base_layer())
    return out
