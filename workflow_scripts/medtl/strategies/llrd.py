"""Layer-wise learning-rate decay (LLRD; Howard & Ruder, 2018; Clark et al., 2020; BEiT's fine-tuning and timm's
``param_groups_layer_decay``): everything trains, each parameter block at its own rate, the head's block at lr
and each block below it ``decay`` times the rate of the block above: block i of n at lr × decay^(n − 1 − i).

timm's rule over timm's layers (``group_matcher``); here the same rule over the network's parameter blocks, the
unit every strategy counts (a ViT: the embeddings, one block per transformer layer, the final norm with the
head, as timm; a ResNet: stem, 4 stages, head). The run's ``training.schedule`` scales every rate alike.
"""
from __future__ import annotations

from medtl.strategies.base import Strategy


class LayerwiseDecay(Strategy):

    def block_rate(self, block: int) -> float:
        """lr × decay^(number of blocks above ``block``)."""
        return self.ctx.lr * float(self.settings["decay"]) ** (self.net.n_blocks - 1 - block)

    def param_groups(self) -> list[dict]:
        groups: dict[int, list] = {}
        for _, block, _, p in self.net.named_block_parameters():
            groups.setdefault(block, []).append(p)
        return [{"params": params, "lr": self.block_rate(b), "name": f"block{b}", "block": b}
                for b, params in sorted(groups.items())]

    def describe(self) -> dict:
        return {**super().describe(),
                "block_rates": [self.block_rate(b) for b in range(self.net.n_blocks)]}
