"""FT: every parameter trains from the start."""
from medtl.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("ft")
class FullFineTuning(Strategy):
    pass
