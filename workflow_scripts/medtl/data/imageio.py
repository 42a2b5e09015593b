"""Reading a source image file into 8-bit pixels: the one reader (:func:`open_image`) of the classification
prepare step (:func:`decode_resize_crop`, :func:`fill_from_files`) and the dense one
(:mod:`medtl.data.dense_prepare`), for any format PIL reads, and DICOM.

Two things an 8-bit store cannot hold are turned into 8 bits by a declared rule, never by accident:

- **wider samples** (16-bit PNG/TIFF ``I;16``, 32-bit integer ``I``, float ``F``): the dataset option
  ``intensity`` (:data:`medtl.data.options.IMAGE`) picks the rule, :func:`scale_to_uint8` applies it.
  ``full_range`` (the default) maps the range the pixel type declares onto 0-255 (uint16:
  ``round(v * 255 / 65535)``), so a 16-bit set gives the same store as its 8-bit rescaled copy;
  ``minmax`` stretches each image's own minimum and maximum; ``percentile`` its 0.5th-99.5th
  percentiles, clipping the rest. PIL's own ``convert("L")`` would clip every value above 255 to white.
  A value outside the declared range (a negative integer, a float outside 0-1, NaN) is refused.
  Under ``minmax`` and ``percentile`` every image is stretched, 8-bit ones too, so a set stays
  consistent; under ``full_range`` an 8-bit image is read as it is.
- **transparency** (RGBA, LA, P or L/RGB with a transparent colour): the image is composited on the
  declared ``background`` (black by default), so the colour hidden under a transparent pixel never
  reaches the store. ``minmax``/``percentile`` look only at pixels that are not fully transparent.

DICOM files (VinDr-CXR ships ``.dicom``) are read with pydicom and shown the way a reader sees
them, as the VinDr-CXR / Kaggle notebooks convert them: the modality LUT (rescale slope and
intercept) and the VOI LUT (window centre and width) applied, MONOCHROME1 inverted so that
bone is bright, then the windowed range scaled to 0-255 by the same :func:`scale_to_uint8`: the window is
a DICOM's declared display range, so ``full_range`` and ``minmax`` stretch its windowed minimum and
maximum (as before), ``percentile`` its percentiles. Compressed transfer syntaxes (JPEG 2000,
JPEG-LS) need a pydicom pixel-data plugin such as pylibjpeg; the error says so.

Masks (:func:`open_mask`) are not scaled: a pixel is foreground where its value is not zero, in any
channel, and not transparent.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from medtl.data.store import StoreError, progress

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


#: the rules of the dataset option ``intensity`` (declared in :data:`medtl.data.options.IMAGE`)
INTENSITY_RULES = ("full_range", "minmax", "percentile")
#: the percentiles of the ``percentile`` rule
PERCENTILES = (0.5, 99.5)
#: PIL modes whose samples are wider than 8 bits
WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32S")
#: PIL modes with one grey band (besides alpha)
GREY_MODES = ("1", "L", "LA", "La", *WIDE_MODES)


def background_level(background: int | str) -> int:
    """The grey level (0-255) of a ``background`` option: a level, 'black' or 'white'."""
    return {"black": 0, "white": 255}.get(background, background) if isinstance(background, str) else int(background)


def scale_to_uint8(values: np.ndarray, intensity: str = "full_range", full_range: tuple[float, float] | None = None,
                   *, mask: np.ndarray | None = None, where: str = "image") -> np.ndarray:
    """``values`` (any shape) scaled to uint8 by the rule ``intensity`` (one of :data:`INTENSITY_RULES`).

    ``full_range``: the (low, high) the pixel type declares, mapped onto 0-255 (the rule of that name);
    a value outside it, or a value that is not finite, is refused naming ``where``. ``mask`` (same shape,
    or the shape of one band): the pixels whose values ``minmax`` and ``percentile`` look at (those
    not fully transparent). A constant image has no range to stretch and becomes 0.
    """
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise StoreError(f"{where}: holds NaN or infinite pixel values; fix or remove the image")
    if intensity == "full_range":
        if full_range is None:
            raise StoreError(f"{where}: its pixel type declares no value range; set the dataset option "
                             "intensity: minmax or intensity: percentile")
        lo, hi = float(full_range[0]), float(full_range[1])
        if v.size and (v.min() < lo or v.max() > hi):
            raise StoreError(f"{where}: pixel values {v.min():g}..{v.max():g} lie outside {lo:g}..{hi:g}, the range "
                             "its pixel type declares (intensity: full_range); set the dataset option intensity: "
                             "minmax or intensity: percentile")
    elif intensity in ("minmax", "percentile"):
        sample = v
        if mask is not None and np.any(mask):
            m = np.asarray(mask, dtype=bool)
            sample = v[m] if m.shape == v.shape else v[m, ...]
        if intensity == "minmax":
            lo, hi = float(sample.min()), float(sample.max())
        else:
            lo, hi = (float(x) for x in np.percentile(sample, PERCENTILES))
    else:
        raise ValueError(f"unknown intensity rule {intensity!r}; allowed: {', '.join(INTENSITY_RULES)}")
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    return np.round(np.clip((v - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def dicom_pixels(path: str | os.PathLike, intensity: str = "full_range") -> np.ndarray:
    """uint8 (rows, columns) grayscale of a DICOM radiograph (see the module's documentation)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if intensity not in INTENSITY_RULES:
        raise ValueError(f"unknown intensity rule {intensity!r}; allowed: {', '.join(INTENSITY_RULES)}")
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
    # the window is the declared display range: full_range stretches the windowed values, as minmax does
    return scale_to_uint8(arr, "percentile" if intensity == "percentile" else "minmax", where=str(path))


def declared_range(img, arr: np.ndarray) -> tuple[float, float] | None:
    """The (low, high) the pixel type of ``img`` declares: its dtype's range (uint16: 0..65535), 0..1 for
    floats; for PIL's 32-bit ``I`` (which holds narrower integers too) the file's declared bit depth
    (TIFF BitsPerSample and SampleFormat; 16 bits for PNG); None where nothing declares one."""
    if arr.dtype.kind == "f":
        return 0.0, 1.0
    bits, signed = arr.dtype.itemsize * 8, arr.dtype.kind == "i"
    if img.mode == "I":
        tags = getattr(img, "tag_v2", None)
        if tags is not None and 258 in tags:
            first = lambda x: x[0] if isinstance(x, (tuple, list)) else x  # noqa: E731
            bits, signed = int(first(tags[258])), int(first(tags.get(339, 1))) == 2
        elif img.format == "PNG":  # PNG samples are at most 16 bits (older Pillow read them as I)
            bits, signed = 16, False
        else:
            return None
    return (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if signed else (0.0, 2.0 ** bits - 1)


def _has_alpha(img) -> bool:
    return "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info


def to_8bit(img, mode: str, intensity: str = "full_range", background: int | str = "black",
            where: str = "image"):
    """A decoded PIL image as a PIL image in ``mode`` ("L" or "RGB"): wide samples scaled by ``intensity``,
    transparency composited on ``background`` (see the module's documentation)."""
    from PIL import Image

    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if intensity not in INTENSITY_RULES:
        raise ValueError(f"unknown intensity rule {intensity!r}; allowed: {', '.join(INTENSITY_RULES)}")
    wide, alpha = img.mode in WIDE_MODES, _has_alpha(img)
    if not wide and not alpha and intensity == "full_range":  # 8-bit and opaque: as it is
        return img.convert(mode) if img.mode != mode else img.copy()
    if wide:
        values = np.asarray(img)
        opacity = None
        if "transparency" in img.info:  # a transparent grey value (16-bit PNG tRNS)
            opacity = np.where(values == img.info["transparency"], 0, 255).astype(np.uint8)
        full = declared_range(img, values)
    else:
        grey = img.mode in GREY_MODES
        if alpha:
            arr = np.asarray(img.convert("LA" if grey else "RGBA"))
            values, opacity = (arr[..., 0] if grey else arr[..., :3]), arr[..., -1]
        else:
            values, opacity = np.asarray(img.convert("L" if grey else "RGB")), None
        full = (0.0, 255.0)
    pixels = scale_to_uint8(values, intensity, full, mask=None if opacity is None else opacity > 0, where=where)
    if opacity is not None:
        a = (opacity.astype(np.float64) / 255.0)
        a = a[..., None] if pixels.ndim == 3 else a
        pixels = np.round(pixels * a + background_level(background) * (1.0 - a)).astype(np.uint8)
    out = Image.fromarray(pixels)
    return out.convert(mode) if out.mode != mode else out


def _decoded(path: str | os.PathLike):
    """The image file decoded by PIL in its own mode; a missing or corrupt file is named."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return _loaded(img)
    except FileNotFoundError:
        raise StoreError(f"{path}: image file is missing") from None
    # ImportError: once Ultralytics is imported, PIL tries an optional HEIF plugin on unknown files
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as err:
        raise StoreError(f"{path}: cannot decode image ({err}); replace or remove it") from None


def _loaded(img):
    """A copy of an open image that keeps what :func:`declared_range` reads (format, TIFF tags)."""
    out = img.copy()
    out.format = img.format
    if hasattr(img, "tag_v2"):
        out.tag_v2 = img.tag_v2
    return out


def open_image(path: str | os.PathLike, mode: str, intensity: str = "full_range", background: int | str = "black"):
    """A decoded PIL image in ``mode`` ("L" or "RGB"), 8 bits, by the rules of the module's documentation;
    a missing or corrupt file is named. The one reader of the classification and dense prepare steps."""
    from PIL import Image

    if is_dicom(path):
        img = Image.fromarray(dicom_pixels(path, intensity))
        return img.convert(mode) if img.mode != mode else img
    return to_8bit(_decoded(path), mode, intensity, background, where=str(path))


def open_mask(path: str | os.PathLike):
    """A mask file as a PIL "L" image, 255 where the file is foreground: a value that is not zero (any
    channel, any bit depth, never scaled) on a pixel that is not transparent."""
    from PIL import Image

    img = _decoded(path)
    if img.mode in WIDE_MODES:
        values = np.asarray(img)
        fg = values != 0
        if "transparency" in img.info:
            fg &= values != img.info["transparency"]
    else:
        grey = img.mode in GREY_MODES
        if _has_alpha(img):
            arr = np.asarray(img.convert("LA" if grey else "RGBA"))
            fg = (arr[..., :-1] != 0).any(axis=-1) & (arr[..., -1] > 0)
        else:
            arr = np.asarray(img.convert("L" if grey else "RGB"))
            fg = arr != 0 if grey else (arr != 0).any(axis=-1)
    return Image.fromarray(fg.astype(np.uint8) * 255)


def decode_resize_crop(path: str | os.PathLike, resize: int, crop: int, channels: int,
                       intensity: str = "full_range", background: int | str = "black") -> np.ndarray:
    """Decode one image file (:func:`open_image`: wide samples scaled by ``intensity``,
    transparency composited on ``background``), resize its shorter side to ``resize`` and centre-crop ``crop``."""
    import torchvision.transforms.functional as TF

    img = open_image(path, "L" if channels == 1 else "RGB", intensity, background)
    img = TF.center_crop(TF.resize(img, resize, antialias=True), [crop, crop])
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def fill_from_files(paths: Sequence[str | os.PathLike], resize: int, crop: int, channels: int,
                    label: str = "images", intensity: str = "full_range",
                    background: int | str = "black") -> Callable[[np.ndarray], None]:
    def fill(out: np.ndarray) -> None:
        tick = progress(label, len(paths))
        for i, path in enumerate(paths):
            out[i] = decode_resize_crop(path, resize, crop, channels, intensity, background)
            tick(i + 1)

    return fill


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


def _as_uint8(a: np.ndarray, where: str) -> np.ndarray:
    """An array image as 8 bits: wider integers scaled by their type's full range (never wrapped modulo 256),
    floats by 0-1 (the reader's ``full_range`` rule for image files)."""
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return scale_to_uint8(a, "full_range", (0 if info.min == 0 else info.min, info.max), where=where)
    if np.issubdtype(a.dtype, np.floating):
        return scale_to_uint8(a, "full_range", (0.0, 1.0), where=where)
    raise StoreError(f"{where}: arrays of type {a.dtype} are not images")


def fill_from_array(images: np.ndarray, resize: int, crop: int, label: str = "images") -> Callable[[np.ndarray], None]:
    """For sources that ship arrays (MedMNIST .npz): same resize/crop as image files."""
    from PIL import Image

    channels = 1 if images.ndim == 3 or images.shape[-1] == 1 else 3

    def fill(out: np.ndarray) -> None:
        import torchvision.transforms.functional as TF

        tick = progress(label, len(images), "resized")
        for i, a in enumerate(images):
            a = _as_uint8(np.asarray(a), f"{label}[{i}]")
            img = Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[-1] == 1 else a)
            img = TF.center_crop(TF.resize(img, resize, antialias=True), [crop, crop])
            arr = np.asarray(img, dtype=np.uint8)
            out[i] = arr[..., None] if channels == 1 else arr
            tick(i + 1)

    return fill
