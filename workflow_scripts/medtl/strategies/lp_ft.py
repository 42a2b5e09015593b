"""LP-FT (Kumar et al., 2022): linear probing for ``lp_epochs``, then full fine-tuning."""
from medtl.strategies.base import Strategy
from medtl.strategies.linear_probe import FrozenBackboneStages


class LinearProbeThenFineTune(FrozenBackboneStages, Strategy):

    def trainable_blocks(self, epoch: int) -> set[int] | None:
        return set() if self.backbone_frozen(epoch) else None

    def backbone_frozen(self, epoch: int) -> bool:
        """The LP stage: the head alone trains on the frozen backbone's (cacheable) features."""
        return epoch < int(self.settings["lp_epochs"])

    def stage(self, epoch: int) -> str:
        return "lp (head)" if self.backbone_frozen(epoch) else "ft (all)"
