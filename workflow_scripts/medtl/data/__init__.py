"""Importing this package registers every dataset source, classification and dense alike."""
from medtl.data.registry import DATASETS, DatasetSpec, RawData  # noqa: F401
from medtl.data.dense_registry import DENSE_DATASETS, DenseDatasetSpec, DenseRaw  # noqa: F401
from medtl.data import adapters, synthetic  # noqa: F401
from medtl.data import dense_adapters, synthetic_dense  # noqa: F401
from medtl.data import sources  # noqa: F401  (real datasets of the studies, one module per source)
