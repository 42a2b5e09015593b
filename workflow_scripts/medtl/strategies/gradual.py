"""Gradual unfreezing: the head trains from the start and one more block is
unfreezed every ``unfreeze_every`` epochs, from the last block back (G-LF) or
from the first block on (G-FL)."""
from medtl.strategies.base import Strategy


class _Gradual(Strategy):
    last_first = True

    def n_unfrozen(self, epoch: int) -> int:
        backbone = self.net.n_blocks - 1
        return min(backbone, epoch // int(self.settings["unfreeze_every"]))

    def trainable_blocks(self, epoch: int) -> set[int]:
        head_block, k = self.net.n_blocks - 1, self.n_unfrozen(epoch)
        backbone = range(head_block)
        chosen = list(backbone)[head_block - k:] if self.last_first else list(backbone)[:k]
        return set(chosen) | {head_block}


class GradualLastFirst(_Gradual):
    last_first = True


class GradualFirstLast(_Gradual):
    last_first = False
