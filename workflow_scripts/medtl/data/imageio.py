"""Opening a source image for the dense prepare step: any format PIL reads, and DICOM.

DICOM files (VinDr-CXR ships ``.dicom``) are read with pydicom and shown the way a reader sees
them, as the VinDr-CXR / Kaggle notebooks convert them: the modality LUT (rescale slope and
intercept) and the VOI LUT (window centre and width) applied, MONOCHROME1 inverted so that
bone is bright, then the range scaled to 0-255. Compressed transfer syntaxes (JPEG 2000,
JPEG-LS) need a pydicom pixel-data plugin such as pylibjpeg; the error says so.
"""
from __future__ import annotations

import os

import numpy as np

from medtl.data.store import StoreError

DICOM_SUFFIXES = {".dicom", ".dcm"}


def is_dicom(path: str | os.PathLike) -> bool:
    return os.path.splitext(str(path))[1].lower() in DICOM_SUFFIXES


def _dcmread(path, **kwargs):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), **kwargs)
    except FileNotFoundError:
        raise StoreError(f"{path}: image file is missing") from None
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise StoreError(f"{path}: cannot read DICOM ({err}); replace or remove it") from None


def dicom_pixels(path: str | os.PathLike) -> np.ndarray:
    """uint8 (rows, columns) grayscale of a DICOM radiograph (see the module's documentation)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = _dcmread(path)
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise StoreError(f"{path}: cannot decode DICOM pixel data (transfer syntax {syntax}: {err}); compressed "
                         "files need a pixel-data plugin, e.g. pip install pylibjpeg pylibjpeg-openjpeg") from None
    arr = apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float64)
    if arr.ndim != 2:
        raise StoreError(f"{path}: expected one grayscale frame, got pixel data of shape {arr.shape}")
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() - arr
    lo, hi = arr.min(), arr.max()
    return np.round((arr - lo) / max(hi - lo, 1e-9) * 255.0).astype(np.uint8)


def open_image(path: str | os.PathLike, mode: str):
    """A decoded PIL image in ``mode`` ("L" or "RGB"); a missing or corrupt file is named."""
    from PIL import Image, UnidentifiedImageError

    if is_dicom(path):
        img = Image.fromarray(dicom_pixels(path))
        return img.convert(mode) if img.mode != mode else img
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if img.mode != mode else img.copy()
    except FileNotFoundError:
        raise StoreError(f"{path}: file is missing") from None
    # ImportError: once Ultralytics is imported, PIL tries an optional HEIF plugin on unknown files
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as err:
        raise StoreError(f"{path}: cannot decode ({err})") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    if is_dicom(path):
        ds = _dcmread(path, stop_before_pixels=True)
        try:
            return int(ds.Columns), int(ds.Rows)
        except AttributeError:
            raise StoreError(f"{path}: DICOM header has no Rows/Columns (not an image?)") from None
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise StoreError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as err:
        raise StoreError(f"{path}: cannot decode image ({err}); replace or remove it") from None
