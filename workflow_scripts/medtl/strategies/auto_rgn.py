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

``scale: pretrained`` (default) is the rule above. ``scale: reference`` follows the reference code instead:
the head is re-drawn with PyTorch's default initialisation (``reset_parameters``: no zero bias) and is in
the maximum with every other non-normalisation tensor; each normalisation layer outside the head gets one
rate, lr * RGN / max, its RGN taken over the layer's parameters together (||(g_w, g_b)|| / ||(w, b)||: rated
per layer, as BioTune groups its parameters by module), not in the maximum (``norm_layers`` does not apply);
and Adam has weight decay 1e-4 (the reference's), whatever ``training.optimizer`` / ``weight_decay`` say.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from medtl.strategies.base import Strategy

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
#: the reference's Adam weight decay (anniesch/surgical-finetuning, ``main.py``: wd 1e-4 at every rate of its grid)
REFERENCE_WEIGHT_DECAY = 1e-4


class AutoRGN(Strategy):
    own_rates = "every tensor's rate from its RGN, each epoch"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.reference = self.settings.get("scale", "pretrained") == "reference"
        #: scale: reference: normalisation layer -> its parameters' names, one rate per layer
        self.norm_layers: dict[str, list[str]] = self._norm_layers() if self.reference else {}
        self.norm_names = {n for names in self.norm_layers.values() for n in names}
        self.frozen_norm = self._norm_parameters() \
            if not self.reference and self.settings["norm_layers"] == "frozen" else set()
        if self.reference:
            self._reset_head()
        self.last_rgn: dict[str, float] = {}
        self.last_rates: dict[str, float] = {}

    def _norm_parameters(self) -> set[str]:
        """Names of the parameters of normalisation layers outside the head."""
        return {n for names in self._norm_layers().values() for n in names}

    def _norm_layers(self) -> dict[str, list[str]]:
        """Normalisation layers outside the head -> the names of their parameters."""
        out = {}
        for mod_name, module in self.net.net.named_modules():
            if isinstance(module, NORM_TYPES):
                names = [f"{mod_name}.{p_name}" if mod_name else p_name
                         for p_name, _ in module.named_parameters(recurse=False)]
                names = [n for n in names if not self.net.is_head(n)]
                if names:
                    out[mod_name] = names
        return out

    def _reset_head(self) -> None:
        """scale: reference: the head's layers re-drawn by PyTorch's default initialisation (``reset_parameters``)."""
        for mod_name, module in self.net.net.named_modules():
            own = [f"{mod_name}.{p}" if mod_name else p for p, _ in module.named_parameters(recurse=False)]
            if own and all(self.net.is_head(n) for n in own) and hasattr(module, "reset_parameters"):
                module.reset_parameters()
                for n in own:
                    if n in self.ctx.init_state:
                        self.ctx.init_state[n] = self.net.net.get_parameter(n).detach().clone()

    def build_optimizer(self) -> torch.optim.Optimizer:
        if not self.reference:
            return super().build_optimizer()
        return torch.optim.Adam(self.param_groups(), lr=self.ctx.lr, weight_decay=REFERENCE_WEIGHT_DECAY)

    def apply_freezing(self, epoch):
        super().apply_freezing(epoch)
        for name, p in self.net.net.named_parameters():
            if name in self.frozen_norm:
                p.requires_grad_(False)

    def param_groups(self):
        return [{"params": [p], "lr": self.ctx.lr, "name": n} for n, p in self.net.net.named_parameters()
                if n not in self.frozen_norm]

    def scaled(self, name: str, p: torch.Tensor) -> bool:
        """Whether a tensor's rate follows its RGN (pretrained, non-zero; scale: reference: the head too, and
        every tensor of a rated normalisation layer): else it gets the base rate."""
        if self.reference:
            return name in self.norm_names or float(p.detach().norm()) > 0
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

    def layer_grad_norms(self, named_params) -> dict[str, float]:
        """scale: reference: each normalisation layer's RGN over its parameters together, under each one's name."""
        lookup = dict(named_params)
        out = {}
        for names in self.norm_layers.values():
            w = math.sqrt(sum(float(lookup[n].detach().norm()) ** 2 for n in names))
            g = math.sqrt(sum(0.0 if lookup[n].grad is None else float(lookup[n].grad.detach().norm()) ** 2
                              for n in names))
            out.update(dict.fromkeys(names, g / w if w > 0 else math.nan))
        return out

    def rates(self, rgn: dict[str, float]) -> dict[str, float]:
        scale = [v for n, v in rgn.items()
                 if self._scaled_names.get(n) and math.isfinite(v) and n not in self.norm_names]
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
            values = self.relative_grad_norms(params)
            if self.norm_layers:
                values.update(self.layer_grad_norms(params))
            for n, v in values.items():
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
        out = {**super().describe(), "frozen_norm_parameters": len(self.frozen_norm)}
        if self.reference:
            out.update(rated_norm_layers=len(self.norm_layers), weight_decay=REFERENCE_WEIGHT_DECAY)
        return out
