"""Importing this package registers every dataset source."""
from medtl.data.registry import DATASETS, DatasetSpec, RawData  # noqa: F401
from medtl.data import adapters, synthetic  # noqa: F401
