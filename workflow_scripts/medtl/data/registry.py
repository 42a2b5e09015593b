"""Dataset registry: each entry says how to obtain a source (``fetch``), how to read it
(``read``) and what the studies report for it. Config entries name one by ``type``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from medtl.registry import Registry


@dataclass
class RawData:
    """A source read into a labels table plus the means to fill the store's image array.

    ``table`` has ``split`` (train/val/test; val may be absent and is then carved
    from train), ``group`` (patient id or ""), ``image_id`` and one 0/1 column per class.
    Images come either from files (``paths``, one per row) or from an array (``array``).
    """
    table: pd.DataFrame
    classes: list[str]
    task: str
    channels: int
    paths: list[str] | None = None
    array: np.ndarray | None = None


@dataclass(frozen=True)
class DatasetSpec:
    fetch: Callable[[Path, dict], dict]       # (raw dir, options) -> manifest; downloads or generates
    read: Callable[[dict, dict], RawData]     # (manifest, options) -> RawData
    metrics: tuple[str, ...] = ("auroc",)
    primary_metric: str = "auroc"
    description: str = ""
    license: str = ""
    urls: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)  # defaults, overridable per config entry


DATASETS: Registry[DatasetSpec] = Registry("dataset")
