"""A network split into ordered parameter blocks, the unit every strategy freezes and unfreezes."""
from __future__ import annotations

import torch
from torch import nn

from medtl.models.spec import ARCHS, ArchSpec  # noqa: F401  (the registry, importable without PyTorch)


def _belongs(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class Network(nn.Module):
    """Wraps a torchvision/timm model and exposes its parameter blocks and head."""

    def __init__(self, net: nn.Module, block_prefixes: list[list[str]], head: str, arch: str):
        super().__init__()
        self.net = net
        self.arch = arch
        self.block_prefixes = block_prefixes
        self.head_name = head
        names = [n for n, _ in net.named_parameters()]
        self._block_of: dict[str, int] = {}
        for i, prefixes in enumerate(block_prefixes):
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
        return _belongs(name, self.head_name)

    def named_block_parameters(self):
        """(name, block index, is_head, parameter) for every parameter."""
        for n, p in self.net.named_parameters():
            yield n, self._block_of[n], self.is_head(n), p

    def block_modules(self, i: int) -> list[nn.Module]:
        mods = dict(self.net.named_modules())
        # a prefix may name a bare parameter (a ViT's cls_token, pos_embed): no module to switch mode
        return [mods[p] for p in self.block_prefixes[i] if p in mods]

    def head_module(self) -> nn.Module:
        return self.net.get_submodule(self.head_name)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Input of the head: the backbone's output, for cached linear probing."""
        captured: list[torch.Tensor] = []
        hook = self.head_module().register_forward_pre_hook(lambda m, args: captured.append(args[0]))
        try:
            self.net(x)
        finally:
            hook.remove()
        return captured[0]

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """Everything but the head: what pretraining hands on to fine-tuning."""
        return {k: v for k, v in self.net.state_dict().items() if not _belongs(k, self.head_name)}

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        own = self.net.state_dict()
        missing = [k for k in own if not _belongs(k, self.head_name) and k not in state]
        if missing:
            raise ValueError(f"{self.arch}: pretrained weights lack {len(missing)} tensors, e.g. {missing[:3]}; "
                             "were they made for another architecture?")
        bad = [k for k in own if k in state and state[k].shape != own[k].shape and not _belongs(k, self.head_name)]
        if bad:
            raise ValueError(f"{self.arch}: pretrained tensor shapes differ for {bad[:3]}; were the weights made "
                             "before the architecture's definition changed? Rerun its weights job "
                             "(snakemake --forcerun pretrain fetch_weights)")
        self.net.load_state_dict({k: v for k, v in state.items() if k in own and not _belongs(k, self.head_name)},
                                 strict=False)


def build_network(arch: str, num_classes: int) -> Network:
    spec = ARCHS.get(arch)
    net = spec.build(num_classes)
    head = spec.head
    if not head:  # a timm or torchvision model by name: its own classifier
        from medtl.models.generic import classifier_name

        head = classifier_name(net, num_classes)
    return Network(net, spec.blocks(net), head, arch)
