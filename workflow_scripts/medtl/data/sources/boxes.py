"""Bounding-box tables of the detection sources (VinDr-CXR, TBX11K, ChestX-ray14's box list).

Every reader returns one :class:`pandas.DataFrame` with the columns of ``BOX_COLUMNS``:

    image     absolute path of the image file (DICOM for VinDr-CXR, PNG otherwise)
    image_id  the source's image id
    class     finding name; "" for an image without any box (kept, so negatives are not lost)
    x1, y1, x2, y2   pixel corners in the source image (NaN for an image without boxes)
    split     train / val / test

plus source-specific extras (e.g. ``rad_id`` for VinDr-CXR). The detection stage (built
separately) turns this into its own dense store; the classification stage never reads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from medtl.data.sources.common import LabelFileError

BOX_COLUMNS = ["image", "image_id", "class", "x1", "y1", "x2", "y2", "split"]
BOX_READERS: dict[str, Callable[[dict, dict], pd.DataFrame]] = {}


def register_boxes(name: str):
    def add(fn):
        BOX_READERS[name] = fn
        return fn
    return add


def read_boxes(dataset_type: str, manifest: dict, options: dict) -> pd.DataFrame:
    """The box table of a registered detection source, by its registry name."""
    if dataset_type not in BOX_READERS:
        raise KeyError(f"'{dataset_type}' has no box reader; known: {', '.join(sorted(BOX_READERS))}")
    return BOX_READERS[dataset_type](manifest, options)


def validate_boxes(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check the shared columns and the box geometry; return the table with columns in order."""
    missing = [c for c in BOX_COLUMNS if c not in df.columns]
    if missing:
        raise LabelFileError(f"{where}: box table lacks columns {missing}")
    coords = df[["x1", "y1", "x2", "y2"]]
    has_box = coords.notna().all(axis=1)
    partial = coords.notna().any(axis=1) & ~has_box
    bad = partial | (has_box & ((df["x2"] < df["x1"]) | (df["y2"] < df["y1"])))
    if bad.any():
        row = df[bad].iloc[0]
        raise LabelFileError(f"{where}: invalid box for image '{row['image_id']}' "
                             f"({row['x1']}, {row['y1']}, {row['x2']}, {row['y2']}): need x1<=x2, y1<=y2")
    extra = [c for c in df.columns if c not in BOX_COLUMNS]
    return df[BOX_COLUMNS + extra].reset_index(drop=True)


def _numeric(series: pd.Series, csv: Path, column) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna() & (series.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise LabelFileError(f"{csv}: column {column!r} holds {series.iloc[i]!r} (data row {i + 1}); "
                             "box coordinates must be numbers")
    return values


def read_box_csv(csv: str | Path, *, image_dir: str | Path | None = None,
                 columns: Sequence = ("image", "class", "x1", "y1", "x2", "y2"), box_format: str = "xyxy",
                 scale: float = 1.0, header_rows: int | None = None, split: str = "train",
                 image_suffix: str = "") -> pd.DataFrame:
    """A CSV of one box per row -> box table.

    ``columns`` names (or, with ``header_rows``, gives the positions of) the image, class and
    four coordinate columns; ``box_format`` is ``xyxy`` (corners) or ``xywh`` (corner + size).
    ``split`` is a split name for every row, or the name of a column holding it.
    """
    csv = Path(csv)
    try:
        if header_rows is not None:
            raw = pd.read_csv(csv, header=None, skiprows=header_rows, dtype=str, keep_default_na=False,
                              usecols=list(columns))
            raw.columns = ["image", "class", "a", "b", "c", "d"]
        else:
            raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise LabelFileError(f"{csv}: box file is missing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise LabelFileError(f"{csv}: malformed box file ({err})") from None
    if header_rows is None:
        absent = [c for c in columns if c not in raw.columns]
        if absent:
            raise LabelFileError(f"{csv}: column(s) {absent} missing; the file has {list(raw.columns)}")
        raw = raw.rename(columns=dict(zip(columns, ["image", "class", "a", "b", "c", "d"])))
    a, b, c, d = (_numeric(raw[k], csv, k) * float(scale) for k in ("a", "b", "c", "d"))
    if box_format == "xywh":
        c, d = a + c, b + d
    elif box_format != "xyxy":
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    names = raw["image"].str.strip()
    base = Path(image_dir).resolve() if image_dir is not None else None
    out = pd.DataFrame({
        "image": [str(base / f"{n}{image_suffix}") if base else f"{n}{image_suffix}" for n in names],
        "image_id": names.map(lambda n: Path(n).stem),
        "class": raw["class"].str.strip(),
        "x1": a, "y1": b, "x2": c, "y2": d,
        "split": raw[split] if split in raw.columns else split,
    })
    return validate_boxes(out, str(csv))
