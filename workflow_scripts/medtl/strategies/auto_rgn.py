"""Auto-RGN (Lee et al., 2023, "Surgical fine-tuning"; reference code anniesch/surgical-finetuning,
``main.py``): at the start of every epoch each parameter tensor gets its own rate,
lr * RGN / max RGN, with RGN = ||grad|| / ||weight|| measured on ``probe_batches`` training
batches (one RGN per batch, averaged, as ``get_lr_weights`` does), and the optimizer starts afresh.

Where this differs from the reference, and why (docs/fidelity.md):

- The reference fine-tunes a head that was already trained on the labels. Here the head is new and
  random (the first study's protocol), and torchvision builds DenseNet/VGG heads with a bias of
  exactly 0: its RGN is astronomically large and, as the maximum, would scale every backbone rate
  to ~0. So the head trains at the base rate and is left out of the maximum: only pretrained
  tensors set the scale.
- A tensor of norm 0 has no relative gradient norm. It is treated like the head (base rate, not in
  the maximum) instead of producing an infinite ratio.
- Normalisation layers: the reference leaves parameters named ``bn`` out of the rates and out of the
  optimizer, so they never train. ``norm_layers: frozen`` (default) does the same, found by module
  type (BatchNorm, GroupNorm, LayerNorm) rather than by name, so DenseNet's ``norm`` layers and
  ResNet's ``downsample.1`` are covered too; the head's own layers always train. ``norm_layers: rgn``
  gives them rates like any other tensor.
- ``reset_optimizer: true`` (default) empties the optimizer's state at every epoch, which is what
  rebuilding Adam each epoch (the reference) amounts to.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from medtl.strategies.base import Strategy

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class AutoRGN(Strategy):
    own_rates = "every tensor's rate from its RGN, each epoch"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.frozen_norm = self._norm_parameters() if self.settings["norm_layers"] == "frozen" else set()
        self.last_rgn: dict[str, float] = {}
        self.last_rates: dict[str, float] = {}

    def _norm_parameters(self) -> set[str]:
        """Names of the parameters of normalisation layers outside the head."""
        out = set()
        for mod_name, module in self.net.net.named_modules():
            if isinstance(module, NORM_TYPES):
                for p_name, _ in module.named_parameters(recurse=False):
                    name = f"{mod_name}.{p_name}" if mod_name else p_name
                    if not self.net.is_head(name):
                        out.add(name)
        return out

    def apply_freezing(self, epoch):
        super().apply_freezing(epoch)
        for name, p in self.net.net.named_parameters():
            if name in self.frozen_norm:
                p.requires_grad_(False)

    def param_groups(self):
        return [{"params": [p], "lr": self.ctx.lr, "name": n} for n, p in self.net.net.named_parameters()
                if n not in self.frozen_norm]

    def scaled(self, name: str, p: torch.Tensor) -> bool:
        """Whether a tensor's rate follows its RGN (pretrained, non-zero): else it gets the base rate."""
        return not self.net.is_head(name) and float(p.detach().norm()) > 0

    @staticmethod
    def relative_grad_norms(named_params) -> dict[str, float]:
        """||grad|| / ||weight|| per tensor; NaN where the weight's norm is 0 (undefined), 0 without a gradient."""
        out = {}
        for name, p in named_params:
            w = float(p.detach().norm())
            g = 0.0 if p.grad is None else float(p.grad.detach().norm())
            out[name] = g / w if w > 0 else math.nan
        return out

    def rates(self, rgn: dict[str, float]) -> dict[str, float]:
        scale = [v for n, v in rgn.items() if self._scaled_names.get(n) and math.isfinite(v)]
        top = max(scale, default=0.0)
        out = {}
        for n, v in rgn.items():
            if not self._scaled_names.get(n) or not math.isfinite(v):
                out[n] = self.ctx.lr
            else:
                out[n] = self.ctx.lr * v / top if top > 0 else self.ctx.lr
        return out

    def on_epoch_start(self, epoch, optimizer, probe):
        super().on_epoch_start(epoch, optimizer, probe)
        params = [(n, p) for n, p in self.net.net.named_parameters() if n not in self.frozen_norm]
        self._scaled_names = {n: self.scaled(n, p) for n, p in params}
        sums = dict.fromkeys(self._scaled_names, 0.0)
        k = int(self.settings["probe_batches"])
        for _ in range(k):
            for _, p in params:
                p.grad = None
            probe()  # forward/backward on the next training batch of this epoch
            for n, v in self.relative_grad_norms(params).items():
                sums[n] += v
        for p in self.net.parameters():
            p.grad = None
        self.last_rgn = {n: v / k for n, v in sums.items()}
        self.last_rates = self.rates(self.last_rgn)
        for group in optimizer.param_groups:
            group["lr"] = self.last_rates[group["name"]]
        if self.settings["reset_optimizer"]:
            optimizer.state.clear()

    def describe(self):
        return {**super().describe(), "frozen_norm_parameters": len(self.frozen_norm)}
