"""LoRA (Hu et al., 2022) and DoRA (Liu et al., 2024) through Hugging Face ``peft``.

The pretrained weights stay as they are; beside each adapted layer (a linear layer or a convolution) peft adds
a low-rank update B·A of rank ``rank``, scaled by ``alpha / rank`` (LoRA), or, for DoRA, the same update of
the weight's direction with a trained magnitude per output. The new head trains fully; nothing else does.

Which layers (``targets``):

- ``auto``: the attention's fused ``qkv`` projection of every transformer layer where the model has one
  (timm's ViTs: ``blocks.<i>.attn.qkv``: one linear layer for query, key and value, so it must be named as
  such: peft's usual ``q_proj``/``v_proj`` names find nothing there); else (CNNs) every convolution and every
  linear layer outside the new head (VGG's pretrained fully connected layers, the input of its head, are
  adapted too). Grouped convolutions (depthwise: ConvNeXt, EfficientNet) are left out: peft cannot merge them.
- a list of module names, each matching a module whose name is it or ends with ``.<it>`` (peft's rule), e.g.
  ``[qkv, proj]`` or ``[attn.qkv, mlp.fc1, mlp.fc2]``.

``blocks``: the parameter blocks whose layers get adapters, counted from the top as SPFT's ``top_k``: ``all``,
or the head's block and the ``blocks`` blocks below it (a ViT's top transformer layers).

The adapters are injected into the network in place (``peft.inject_adapter_in_model``: no wrapper model), so
the network keeps its blocks, its head and its forward; only the adapted layers' parameter names change
(``qkv.weight`` -> ``qkv.base_layer.weight``, beside ``qkv.lora_A.default.weight``). Checkpoints, the best
epoch's snapshot and the evaluation use the adapted network as it is (its state dict holds the adapters);
:func:`merged_copy` gives the same model with the adapters merged into the weights (``Network.plain_net``,
``Network.backbone_state``). BatchNorm statistics stay as pretrained (``frozen_bn: eval``,
:class:`medtl.strategies.base.FixedBatchNormStatistics`).
"""
from __future__ import annotations

import copy

from torch import nn

from medtl.models.adapters import merge_adapters, merged_copy  # noqa: F401  (merged_copy: re-exported)
from medtl.strategies.base import FixedBatchNormStatistics, Strategy

#: what peft names every adapter parameter (lora_A, lora_B, lora_magnitude_vector): ``<layer>.lora_*.<adapter>.*``
ADAPTER_MARK = ".lora_"
#: the layers ``targets: auto`` adapts on a model without a fused qkv projection
ADAPTABLE = (nn.Linear, nn.Conv2d)


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def adapter_targets(network, targets, blocks) -> list[str]:
    """The full names of the modules that get adapters: ``targets`` (``auto`` or a list of names) among the
    layers of the chosen blocks (``all``, or the head's block and the ``blocks`` blocks below it), outside the
    new head; ValueError when nothing matches."""
    head_block = network.n_blocks - 1
    chosen = set(range(network.n_blocks)) if blocks == "all" else \
        set(range(max(0, head_block - int(blocks)), head_block + 1))
    layers = {}  # the modules with their own weight, in the chosen blocks, outside the head
    for name, module in network.net.named_modules():
        weight = getattr(module, "weight", None)
        if not name or not isinstance(weight, nn.Parameter) or network.is_head(name):
            continue
        if network.block_of(f"{name}.weight") in chosen:
            layers[name] = module
    if targets == "auto":
        qkv = [n for n, m in layers.items() if _matches(n, "attn.qkv") and isinstance(m, nn.Linear)]
        names = qkv or [n for n, m in layers.items()
                        if isinstance(m, ADAPTABLE) and getattr(m, "groups", 1) == 1]
    else:
        names = [n for n in layers if any(_matches(n, t) for t in targets)]
        unmatched = [t for t in targets if not any(_matches(n, t) for n in layers)]
        if unmatched:
            raise ValueError(f"{network.arch}: targets {unmatched} name no layer with weights in the chosen blocks "
                             f"(blocks: {blocks}) outside the head; such layers are e.g. {list(layers)[:8]}")
    if not names:
        raise ValueError(f"{network.arch}: no layer to adapt with targets {targets!r} in blocks {blocks!r}")
    return names


def add_adapters(network, settings: dict, dora: bool) -> list[str]:
    """Inject LoRA (or DoRA) layers into ``network.net`` in place; returns the adapted modules' names. Every
    parameter but the adapters is left frozen by peft; the caller decides what else trains."""
    from peft import LoraConfig, inject_adapter_in_model

    names = adapter_targets(network, settings["targets"], settings["blocks"])
    config = LoraConfig(r=int(settings["rank"]), lora_alpha=float(settings["alpha"]),
                        lora_dropout=float(settings["dropout"]), target_modules=names, use_dora=dora, bias="none")
    inject_adapter_in_model(config, network.net)
    network.reindex()  # the adapted layers' parameters have new names, under the same block prefixes
    network.adapted = True
    return names


class LoRA(FixedBatchNormStatistics, Strategy):
    dora = False

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.adapted_modules = add_adapters(self.net, self.settings, dora=self.dora)
        self.adapter_names = {n for n, _ in self.net.net.named_parameters() if ADAPTER_MARK in n}

    def apply_freezing(self, epoch: int) -> None:
        for name, _, is_head, p in self.net.named_block_parameters():
            p.requires_grad_(is_head or name in self.adapter_names)

    def stage(self, epoch: int) -> str:
        return "adapters+head"

    def merged(self):
        """The trained network with its adapters merged into the weights: a copy, a plain ``Network`` of the
        architecture (the strategy's network keeps its adapters)."""
        out = copy.deepcopy(self.net)
        out.net = merge_adapters(out.net)
        out.adapted = False
        out.reindex()
        return out

    def describe(self) -> dict:
        params = dict(self.net.net.named_parameters())
        return {**super().describe(), "adapted_modules": len(self.adapted_modules),
                "adapter_parameters": sum(params[n].numel() for n in self.adapter_names)}


class DoRA(LoRA):
    dora = True
