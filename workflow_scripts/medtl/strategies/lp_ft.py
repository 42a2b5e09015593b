"""LP-FT (Kumar et al., 2022): linear probing for ``lp_epochs``, then full fine-tuning."""
from medtl.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("lp_ft")
class LinearProbeThenFineTune(Strategy):
    defaults = {"lp_epochs": 2}

    def trainable_blocks(self, epoch: int) -> set[int] | None:
        return set() if epoch < int(self.settings["lp_epochs"]) else None
