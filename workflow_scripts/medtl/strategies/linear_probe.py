"""LP: only the new head trains; the backbone, BatchNorm statistics included, stays as pretrained."""
from medtl.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("lp")
class LinearProbing(Strategy):
    #: the backbone never changes, so its features can be computed once and cached
    frozen_backbone = True

    def trainable_blocks(self, epoch: int) -> set[int]:
        return set()
