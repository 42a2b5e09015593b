"""A network split into ordered parameter blocks, the unit every strategy freezes and unfreezes."""
from __future__ import annotations

import torch
from torch import nn

from medtl.models.spec import ARCHS, ArchSpec  # noqa: F401  (the registry, importable without PyTorch)


def _belongs(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class HeadSet(nn.Module):
    """Several classifiers that the model averages (a distillation head beside the class head: deit, levit,
    efficientformer; crossvit's two branches), as one module over their concatenated inputs, so that a
    frozen backbone's cached features train them as the uncached forward does."""

    def __init__(self, heads: list[nn.Module], widths: list[int]):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.widths = widths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.widths, dim=1)
        return torch.stack([head(part) for head, part in zip(self.heads, parts)]).mean(0)


def _in_width(module: nn.Module) -> int:
    """The width of a classifier's input: its first linear (or norm) layer's."""
    for m in module.modules():
        for attr in ("in_features", "num_features", "normalized_shape"):
            width = getattr(m, attr, None)
            if width is not None:
                return int(width[0] if isinstance(width, (tuple, list)) else width)
    raise ValueError(f"{type(module).__name__}: the width of its input is unknown")


class Network(nn.Module):
    """Wraps a torchvision/timm model and exposes its parameter blocks and head (one classifier, or
    several that the model averages: :class:`HeadSet`)."""

    def __init__(self, net: nn.Module, block_prefixes: list[list[str]], head: str | tuple[str, ...], arch: str):
        super().__init__()
        self.net = net
        self.arch = arch
        self.block_prefixes = block_prefixes
        self.head_names = (head,) if isinstance(head, str) else tuple(head)
        self.head_name = self.head_names[0]
        self.reindex()

    #: set by a strategy that added adapters to the modules (LoRA, DoRA: :mod:`medtl.strategies.peft_adapters`)
    adapted = False

    def reindex(self) -> None:
        """Map every parameter to its block, by name: at construction, and again after a strategy added
        parameters under the blocks' modules (LoRA's ``qkv.base_layer.weight``, ``qkv.lora_A.default.weight``)."""
        arch = self.arch
        names = [n for n, _ in self.net.named_parameters()]
        self._block_of: dict[str, int] = {}
        for i, prefixes in enumerate(self.block_prefixes):
            for n in names:
                if any(_belongs(n, p) for p in prefixes):
                    if n in self._block_of:
                        raise ValueError(f"{arch}: parameter {n} is in two blocks")
                    self._block_of[n] = i
        orphans = [n for n in names if n not in self._block_of]
        if orphans:
            raise ValueError(f"{arch}: parameters outside every block: {orphans[:5]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def n_blocks(self) -> int:
        return len(self.block_prefixes)

    def block_of(self, name: str) -> int:
        """Block index of a parameter named as in ``self.net.named_parameters()``."""
        return self._block_of[name]

    def is_head(self, name: str) -> bool:
        return any(_belongs(name, h) for h in self.head_names)

    def named_block_parameters(self):
        """(name, block index, is_head, parameter) for every parameter."""
        for n, p in self.net.named_parameters():
            yield n, self._block_of[n], self.is_head(n), p

    def block_modules(self, i: int) -> list[nn.Module]:
        mods = dict(self.net.named_modules())
        # a prefix may name a bare parameter (a ViT's cls_token, pos_embed): no module to switch mode
        return [mods[p] for p in self.block_prefixes[i] if p in mods]

    def head_module(self) -> nn.Module:
        """The classifier, applied to :meth:`features`' output."""
        heads = [self.net.get_submodule(h) for h in self.head_names]
        if len(heads) == 1:
            return heads[0]
        # not an attribute: its parameters are the network's own, registered once under self.net
        return HeadSet(heads, [_in_width(h) for h in heads])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Input of the head: the backbone's output, for cached linear probing (several heads: their
        inputs, flattened and concatenated in the order :class:`HeadSet` splits them)."""
        captured: list[torch.Tensor] = []
        hooks = [self.net.get_submodule(h).register_forward_pre_hook(lambda m, args: captured.append(args[0]))
                 for h in self.head_names]
        try:
            self.net(x)
        finally:
            for hook in hooks:
                hook.remove()
        return captured[0] if len(captured) == 1 else torch.cat([c.flatten(1) for c in captured], dim=1)

    def plain_net(self) -> nn.Module:
        """The model under its own parameter names: ``self.net``, or, where a strategy added adapters to it
        (:attr:`adapted`), a copy with the adapters merged into the weights they adapt."""
        if not self.adapted:
            return self.net
        from medtl.models.adapters import merged_copy

        return merged_copy(self.net)

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """Everything but the head: what pretraining hands on to fine-tuning (adapters merged: :meth:`plain_net`)."""
        return {k: v for k, v in self.plain_net().state_dict().items() if not self.is_head(k)}

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        own = self.net.state_dict()
        missing = [k for k in own if not self.is_head(k) and k not in state]
        if missing:
            raise ValueError(f"{self.arch}: pretrained weights lack {len(missing)} tensors, e.g. {missing[:3]}; "
                             "were they made for another architecture?")
        bad = [k for k in own if k in state and state[k].shape != own[k].shape and not self.is_head(k)]
        if bad:
            raise ValueError(f"{self.arch}: pretrained tensor shapes differ for {bad[:3]}; were the weights made "
                             "before the architecture's definition changed? Rerun its weights job "
                             "(snakemake --forcerun pretrain fetch_weights)")
        self.net.load_state_dict({k: v for k, v in state.items() if k in own and not self.is_head(k)},
                                 strict=False)


def build_network(arch: str, num_classes: int) -> Network:
    spec = ARCHS.get(arch)
    net = spec.build(num_classes)
    head = spec.head
    if not head:  # a timm or torchvision model by name: its own classifier(s)
        from medtl.models.generic import classifier_names

        head = classifier_names(net, num_classes)
    return Network(net, spec.blocks(net), head, arch)
