"""FT: every parameter trains from the start."""
from medtl.strategies.base import Strategy


class FullFineTuning(Strategy):
    pass
