"""Architectures: the registry (:mod:`medtl.models.spec`, importable without PyTorch) and, on first use,
the networks built from it (:mod:`medtl.models.network`)."""
from medtl.models.spec import ARCHS, ArchSpec  # noqa: F401


def __getattr__(name: str):
    # the implementation side (PyTorch), imported on first use only
    if name in ("Network", "build_network"):
        from medtl.models import network

        return getattr(network, name)
    raise AttributeError(f"module 'medtl.models' has no attribute '{name}'")
