"""L2-SP and L1-SP (Li et al., 2018): pull the pretrained part towards its starting point.

L2-SP adds  alpha/2 * ||w_S - w_S^0||_2^2 + beta/2 * ||w_head||_2^2
L1-SP adds  alpha   * ||w_S - w_S^0||_1   + beta/2 * ||w_head||_2^2
where w_S are the pretrained parameters and w_head the new head.
"""
import torch

from medtl.strategies.base import Strategy


class _StartingPoint(Strategy):
    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        named = list(self.net.named_block_parameters())
        self._pretrained = [(p, ctx.init_state[n].to(p.device)) for n, _, head, p in named if not head]
        self._head = [p for _, _, head, p in named if head]

    def distance(self, diff: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self) -> torch.Tensor:
        alpha, beta = float(self.settings["alpha"]), float(self.settings["beta"])
        sp = sum(self.distance(p - p0) for p, p0 in self._pretrained)
        head = sum(p.pow(2).sum() for p in self._head)
        return alpha * sp + beta / 2 * head


class L2SP(_StartingPoint):
    def distance(self, diff):
        return diff.pow(2).sum() / 2


class L1SP(_StartingPoint):
    def distance(self, diff):
        return diff.abs().sum()
