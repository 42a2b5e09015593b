"""BitFit (Ben Zaken et al., 2022): only the bias terms of the pretrained network train, with the new head.

Biases are the parameters named ``bias``: those of convolutions and linear layers, and those of the
normalisation layers (BatchNorm's and LayerNorm's shift β), which is all a ResNet or DenseNet has, its
convolutions having none. ``norm_layers`` says what of the normalisation layers (BatchNorm, GroupNorm,
LayerNorm, by module type) trains: ``biases`` (default: their shift, as every bias), ``all`` (their scale γ
too) or ``frozen`` (nothing of them). Everything else keeps its pretrained value, the BatchNorm statistics
included (``frozen_bn: eval``, :class:`medtl.strategies.base.FixedBatchNormStatistics`).
"""
from __future__ import annotations

from torch import nn

from medtl.strategies.base import FixedBatchNormStatistics, Strategy

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def norm_parameter_names(network) -> set[str]:
    """The parameters of the normalisation layers, by name (the head's included)."""
    out = set()
    for mod_name, module in network.net.named_modules():
        if isinstance(module, NORM_TYPES):
            out |= {f"{mod_name}.{p}" if mod_name else p for p, _ in module.named_parameters(recurse=False)}
    return out


class BitFit(FixedBatchNormStatistics, Strategy):

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.norm_names = norm_parameter_names(self.net)
        self.trained = {n for n, _, is_head, _ in self.net.named_block_parameters() if not is_head
                        and self.trains(n)}

    def trains(self, name: str) -> bool:
        """Whether the pretrained parameter ``name`` trains."""
        mode = self.settings["norm_layers"]
        if name in self.norm_names:
            return mode == "all" or (mode == "biases" and name.endswith(".bias"))
        return name.endswith(".bias") or name == "bias"

    def apply_freezing(self, epoch: int) -> None:
        for name, _, is_head, p in self.net.named_block_parameters():
            p.requires_grad_(is_head or name in self.trained)

    def stage(self, epoch: int) -> str:
        return "biases+head"

    def describe(self) -> dict:
        return {**super().describe(), "trained_tensors": len(self.trained)}
