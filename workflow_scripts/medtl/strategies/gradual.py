"""Gradual unfreezing: the head trains from the start and one more block is
unfreezed every ``unfreeze_every`` epochs, from the last block back (G-LF) or
from the first block on (G-FL). How many blocks train in an epoch is the schedule every staged
strategy shares (:class:`medtl.staging.StageSchedule`): a head-only stage of ``unfreeze_every``
epochs, then one more block every ``unfreeze_every`` epochs, up to the whole backbone."""
from medtl.staging import StageSchedule
from medtl.strategies.base import Strategy


class _Gradual(Strategy):
    last_first = True

    def n_unfrozen(self, epoch: int) -> int:
        every = int(self.settings["unfreeze_every"])
        schedule = StageSchedule(head_epochs=every, top_k="all", unfreeze_every=every, progressive=True)
        return schedule.n_unfrozen(epoch, self.net.n_blocks - 1)

    def trainable_blocks(self, epoch: int) -> set[int]:
        head_block, k = self.net.n_blocks - 1, self.n_unfrozen(epoch)
        backbone = range(head_block)
        chosen = list(backbone)[head_block - k:] if self.last_first else list(backbone)[:k]
        return set(chosen) | {head_block}


class GradualLastFirst(_Gradual):
    last_first = True


class GradualFirstLast(_Gradual):
    last_first = False
