"""Strategy registry. Importing this package registers every strategy's declaration
(``medtl.strategies.declarations``) without importing PyTorch; a strategy's implementation is
imported when a job builds it."""
from medtl.strategies.spec import STRATEGIES, StrategySpec, uses_frozen_features  # noqa: F401
from medtl.strategies import declarations  # noqa: F401


def __getattr__(name: str):
    # the implementation side (PyTorch), imported on first use only
    if name in ("Context", "Strategy"):
        from medtl.strategies import base

        return getattr(base, name)
    raise AttributeError(f"module 'medtl.strategies' has no attribute '{name}'")
