"""Registry of dense-annotation sources: boxes for detection, masks for segmentation.

Kept apart from ``DATASETS``: a dense source reads into boxes and mask files, not into a
one-row-per-image label table, so a classification config must never be able to name one
(and the other way round). The shape of an entry is the same, though: ``fetch`` obtains the
raw files once, a reader per task turns them into :class:`DenseRaw`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from medtl.registry import Registry

DETECTION, SEGMENTATION = "detection", "segmentation"
DENSE_TASKS = (DETECTION, SEGMENTATION)
BOX_COLUMNS = ("x1", "y1", "x2", "y2")


@runtime_checkable
class MaskArray(Protocol):
    """A mask that is not a file (e.g. CheXmask's run-length encoding): ``array()`` decodes it to a
    2-D array, non-zero = foreground, at the source image's resolution."""

    def array(self) -> np.ndarray: ...


@dataclass
class DenseRaw:
    """A dense source read into what the prepare step needs.

    ``table``: one row per image with ``split`` (train/test, val optional: carved from
    train otherwise), ``group`` (patient id or "") and ``image_id``; ``paths`` holds its image
    file, row by row. ``classes`` are the box classes (detection) or the structures
    (segmentation).

    detection:    ``boxes`` has ``row`` (position in ``table``), ``class`` (a name of
                  ``classes``) and x1, y1, x2, y2 as fractions of the source image's width and
                  height, so they stay valid whatever size the image file has.
    segmentation: ``masks[row][k]`` is structure k's mask: a binary mask file, a
                  :class:`MaskArray` (a mask kept encoded, decoded only when prepared), or None
                  where that structure is not annotated (then it is neither trained on nor scored).
    """
    table: pd.DataFrame
    paths: list[str]
    classes: list[str]
    task: str
    channels: int
    boxes: pd.DataFrame | None = None
    masks: list[list[str | MaskArray | None]] | None = None


@dataclass(frozen=True)
class DenseDatasetSpec:
    fetch: Callable[[Path, dict], dict]                       # (raw dir, options) -> manifest
    readers: dict[str, Callable[[dict, dict], DenseRaw]]      # task -> (manifest, options) -> DenseRaw
    description: str = ""
    license: str = ""
    urls: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)               # defaults, overridable per config entry

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in DENSE_TASKS if t in self.readers)

    def reader(self, task: str, name: str = "") -> Callable[[dict, dict], DenseRaw]:
        if task not in self.readers:
            raise ValueError(f"dense dataset '{name}' has no {task} annotations (it supports: "
                             f"{', '.join(self.tasks)})")
        return self.readers[task]


DENSE_DATASETS: Registry[DenseDatasetSpec] = Registry("dense dataset")
