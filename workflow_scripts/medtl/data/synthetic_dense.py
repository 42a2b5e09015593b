"""Synthetic images with dense annotations, for the offline demo: a target and a source domain.

``synth_cxr_dense``: grayscale radiograph-like images with
- boxes around lesions inside the lungs, two imbalanced classes: ``nodule`` (round, bright,
  frequent) and ``opacity`` (larger, diffuse, rarer); lesions are large for a radiograph, so
  that they stay several pixels wide in the demo's 64 px images (the detectors' finest grid
  has a stride of 8 px: a smaller box would hold no anchor point);
- masks of the ``heart``, ``left_lung`` and ``right_lung``; "left" and "right" are the
  patient's, so the left lung is on the image's right (radiological convention), and the
  lungs exclude what the heart covers, as in the real annotations.

``synth_shapes_dense``: the source domain the pipeline pretrains dense models on (detectors'
backbones, SAM's image encoder), the dense counterpart of ``synth_source``: textured grayscale
scenes with up to one each of four shapes (``disk``, ``square``, ``triangle``, ``ring``), each
with its box and its mask. Nothing in it is a radiograph, so a model pretrained on it brings
generic features -- edges, blobs, textures, shape boundaries -- not the target's answers.

Both are written in the raw layouts of the generic adapters (``images/``, YOLO ``labels/``,
``classes.txt``, ``masks/<structure>/``, ``splits.csv``), so the synthetic data travels the
same read and prepare path as real data.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medtl.data.dense_adapters import read_mask_folder, read_yolo_folder
from medtl.data.dense_registry import DENSE_DATASETS, DETECTION, SEGMENTATION, DenseDatasetSpec
from medtl.io import atomic_path
from medtl.settings import Choice, Int, Number, Settings

LESIONS = ("nodule", "opacity")
LESION_RATE = (1.0, 0.45)            # expected lesions per image, by class
STRUCTURES = ("heart", "left_lung", "right_lung")


def _grid(size: int):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    return x, y


def _ellipse(x, y, cx, cy, rx, ry) -> np.ndarray:
    return (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) <= 1.0


def draw_cxr(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[tuple]]:
    """One image: (uint8 image, {structure: bool mask}, [(class, x1, y1, x2, y2) as fractions])."""
    x, y = _grid(size)
    img = np.full((size, size), 0.12, np.float32)
    img[_ellipse(x, y, 0.5, 0.56, rng.uniform(0.42, 0.47), 0.52)] = 0.6  # body
    dx, lung_ry = rng.uniform(0.19, 0.23), rng.uniform(0.28, 0.33)
    lungs = {side: _ellipse(x, y, 0.5 + s * dx, 0.5, rng.uniform(0.14, 0.17), lung_ry)
             for side, s in (("right_lung", -1), ("left_lung", 1))}  # patient's left = image right
    heart = _ellipse(x, y, 0.53 + rng.uniform(-0.02, 0.02), 0.64, rng.uniform(0.12, 0.17), rng.uniform(0.11, 0.14))
    for lung in lungs.values():
        img[lung] = 0.22
    img[heart] = 0.72
    masks = {"heart": heart, **{k: v & ~heart for k, v in lungs.items()}}
    for k in range(1, 5):  # faint ribs across the lungs, so lung texture is not flat
        band = np.abs(y - (0.22 + 0.13 * k) - 0.08 * np.abs(x - 0.5)) < 0.012
        img[band & (masks["left_lung"] | masks["right_lung"])] += 0.08
    boxes = []
    for cls, rate in zip(LESIONS, LESION_RATE):
        for _ in range(rng.poisson(rate)):
            side = masks["right_lung"] if rng.random() < 0.5 else masks["left_lung"]
            ys, xs = np.nonzero(side)
            if len(xs) == 0:
                continue
            j = rng.integers(len(xs))
            cx, cy = xs[j] / (size - 1), ys[j] / (size - 1)
            if cls == "nodule":
                r = rng.uniform(0.06, 0.08)
                img[_ellipse(x, y, cx, cy, r, r)] = rng.uniform(0.8, 0.95)
                rx = ry = r
            else:
                rx, ry = rng.uniform(0.1, 0.13), rng.uniform(0.11, 0.15)
                patch = _ellipse(x, y, cx, cy, rx, ry)
                img[patch] += 0.3 + 0.15 * rng.random(int(patch.sum())).astype(np.float32)
            boxes.append((cls, *np.clip([cx - rx, cy - ry, cx + rx, cy + ry], 0.0, 1.0)))
    img += rng.normal(0, 0.04, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), masks, boxes


def _write_scenes(raw: Path, options: dict, name: str, stem: str, draw, box_classes, mask_names, what: str) -> dict:
    """PNG images from ``draw(rng, size)``, YOLO labels, a mask per structure and splits; the manifest comes
    last (written by the caller)."""
    rng = np.random.default_rng(int(options["seed"]))
    size, n = int(options["size"]), int(options["n"])
    test_every = max(2, round(1 / float(options.get("test_fraction", 0.25))))
    for sub in ["images", "labels", *(f"masks/{m}" for m in mask_names)]:
        (raw / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image_stem = stem.format(i)
        img, masks, boxes = draw(rng, size)
        Image.fromarray(img).save(raw / "images" / f"{image_stem}.png")
        for m in mask_names:
            Image.fromarray(masks[m].astype(np.uint8) * 255).save(raw / "masks" / m / f"{image_stem}.png")
        lines = [f"{box_classes.index(c)} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"
                 for c, x1, y1, x2, y2 in boxes]
        (raw / "labels" / f"{image_stem}.txt").write_text("".join(line + "\n" for line in lines))
        rows.append({"image": f"{image_stem}.png", "split": "test" if i % test_every == test_every - 1 else "train",
                     "group": image_stem})
    (raw / "classes.txt").write_text("".join(c + "\n" for c in box_classes))
    with atomic_path(raw / "splits.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    print(f"[synthetic] {name}: wrote {n} {what} ({size} px) to {raw}", file=sys.stderr, flush=True)
    return {"root": str(raw.resolve()), "generated": name, "n": n}


def generate(raw: Path, options: dict) -> dict:
    return _write_scenes(raw, options, "synth_cxr_dense", "cxr{:04d}", draw_cxr, LESIONS, STRUCTURES, "images")


DENSE_DATASETS.register("synth_cxr_dense")(DenseDatasetSpec(
    fetch=generate,
    readers={
        DETECTION: lambda manifest, o: read_yolo_folder(manifest, {**o, "splits_csv": "splits.csv"}),
        SEGMENTATION: lambda manifest, o: read_mask_folder(manifest, {**o, "splits_csv": "splits.csv",
                                                                      "structures": list(STRUCTURES)}),
    },
    options=Settings(
        seed=Int(0, minimum=0, doc="seed of the generator"),
        size=Int(96, minimum=16, doc="side of the generated images, px"),
        n=Int(120, minimum=10, doc="images"),
        test_fraction=Number(0.25, above=0, below=1, doc="fraction of the images in the test split"),
        channels=Choice(1, choices=(1, 3), doc="channels of the stored images"),
    ),
    description="Synthetic chest-X-ray-like, grayscale: lesion boxes (nodule, opacity) and heart/lung masks."))


SHAPES = ("disk", "square", "triangle", "ring")


def _shape_mask(kind: str, x, y, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    dx, dy = x - cx, y - cy
    if kind == "disk":
        return dx ** 2 + dy ** 2 <= r ** 2
    if kind == "ring":
        d = np.sqrt(dx ** 2 + dy ** 2)
        return (d <= r) & (d >= 0.55 * r)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if kind == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    # an equilateral triangle inscribed in the circle of radius r
    return (v >= -0.5 * r) & (np.sqrt(3) * u + v <= r) & (-np.sqrt(3) * u + v <= r)


def draw_shapes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[tuple]]:
    """One scene: (uint8 image, {shape: bool mask, empty when absent}, [(shape, x1, y1, x2, y2) as fractions])."""
    x, y = _grid(size)
    img = rng.uniform(0.2, 0.6) + 0.15 * (rng.uniform(-1, 1) * (x - 0.5) + rng.uniform(-1, 1) * (y - 0.5))
    for _ in range(3):  # low-frequency texture of the background
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
        img = img + 0.05 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    img = img.astype(np.float32)
    occupied = np.zeros((size, size), bool)
    masks = {k: np.zeros((size, size), bool) for k in SHAPES}
    boxes = []
    for kind in SHAPES:
        if rng.random() > 0.7:
            continue
        for _ in range(20):  # a place that does not overlap what is drawn already
            r = rng.uniform(0.08, 0.2)
            cx, cy = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
            mask = _shape_mask(kind, x, y, cx, cy, r, rng.uniform(0, np.pi))
            if mask.any() and not (mask & occupied).any():
                break
        else:
            continue
        occupied |= mask
        masks[kind] = mask
        contrast = rng.choice([-1, 1]) * rng.uniform(0.2, 0.4)
        value = contrast + (0.06 * np.sin(2 * np.pi * rng.uniform(4, 10) * (x + y)) if rng.random() < 0.4 else 0)
        img[mask] = (img + value)[mask]
        rows, cols = np.nonzero(mask)
        boxes.append((kind, cols.min() / size, rows.min() / size, (cols.max() + 1) / size, (rows.max() + 1) / size))
    img += rng.normal(0, 0.04, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), masks, boxes


def generate_shapes(raw: Path, options: dict) -> dict:
    return _write_scenes(raw, options, "synth_shapes_dense", "shapes{:05d}", draw_shapes, SHAPES, SHAPES, "scenes")


DENSE_DATASETS.register("synth_shapes_dense")(DenseDatasetSpec(
    fetch=generate_shapes,
    readers={
        DETECTION: lambda manifest, o: read_yolo_folder(manifest, {**o, "splits_csv": "splits.csv"}),
        SEGMENTATION: lambda manifest, o: read_mask_folder(manifest, {**o, "splits_csv": "splits.csv",
                                                                      "structures": list(SHAPES)}),
    },
    options=Settings(
        seed=Int(0, minimum=0, doc="seed of the generator"),
        size=Int(96, minimum=16, doc="side of the generated images, px"),
        n=Int(240, minimum=10, doc="images"),
        test_fraction=Number(0.25, above=0, below=1, doc="fraction of the images in the test split"),
        channels=Choice(1, choices=(1, 3), doc="channels of the stored images"),
    ),
    description="Synthetic source domain for pretraining dense models: textured scenes with shapes (disk, square, "
                "triangle, ring), their boxes and masks."))
