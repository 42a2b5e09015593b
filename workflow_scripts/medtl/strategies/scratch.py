"""Scratch: FT from the architecture's random initialisation, whatever its ``weights``: the reference that says
whether transfer helps. Its declaration's ``random_init`` makes the job grid give its jobs no weights file and
keep the architecture's weights out of their cache key (rules/common.smk), so the network a job builds is the
seeded random one; from there it trains as FT."""
from medtl.strategies.full import FullFineTuning


class Scratch(FullFineTuning):
    pass
