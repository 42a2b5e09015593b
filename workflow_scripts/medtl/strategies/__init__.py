"""Strategy registry; importing this package registers every strategy module."""
from medtl.strategies.base import STRATEGIES, Context, Strategy  # noqa: F401
from medtl.strategies import (  # noqa: F401
    auto_rgn, full, gradual, linear_probe, lp_ft, sp, spft,
)
