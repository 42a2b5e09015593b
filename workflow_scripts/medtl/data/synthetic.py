"""Synthetic datasets for the offline demo, written in the raw layout of the
generic CSV adapter (PNG files + labels.csv), so they travel the same
prepare path as real data.

- ``synth_cxr``: grayscale chest-X-ray-like images, 4 imbalanced findings (multi-label),
  two images per patient;
- ``synth_derm``: RGB skin-lesion-like images, 3 imbalanced classes (multi-class);
- ``synth_source``: shapes and textures in 8 classes, half in colour and half in grey, the source domain the
  pipeline pretrains on so fine-tuning starts from genuinely pretrained weights.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from medtl.data.adapters import read_csv_table
from medtl.data.registry import DATASETS, DatasetSpec
from medtl.io import atomic_path, write_json
from medtl.settings import Int, Settings

CXR_FINDINGS = ("cardiomegaly", "effusion", "nodule", "opacity")
CXR_PREVALENCE = (0.35, 0.2, 0.15, 0.1)
DERM_CLASSES = ("nevus", "melanoma", "keratosis")
DERM_FREQ = (0.6, 0.25, 0.15)
SOURCE_CLASSES = ("disk", "square", "ring", "cross", "hstripes", "vstripes", "checker", "triangle")


def _grid(size: int):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    return x, y


def _ellipse(x, y, cx, cy, rx, ry) -> np.ndarray:
    return (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) <= 1.0


def cxr_image(rng: np.random.Generator, labels: np.ndarray, size: int, anatomy: dict) -> np.ndarray:
    x, y = _grid(size)
    img = np.full((size, size), 0.15, np.float32)
    img[_ellipse(x, y, 0.5, 0.55, 0.46, 0.5)] = 0.65  # body
    for side in (-1, 1):
        lung = _ellipse(x, y, 0.5 + side * anatomy["lung_dx"], 0.5, 0.17, 0.33)
        img[lung] = 0.25
    heart_rx = anatomy["heart_rx"] * (1.3 if labels[0] else 1.0)
    img[_ellipse(x, y, 0.54, 0.62, heart_rx, 0.14)] = 0.75
    if labels[1]:  # fluid at the base of one lung
        side = rng.choice((-1, 1))
        img[_ellipse(x, y, 0.5 + side * anatomy["lung_dx"], 0.8, 0.17, 0.1)] = 0.7
    if labels[2]:
        side = rng.choice((-1, 1))
        cx, cy = 0.5 + side * anatomy["lung_dx"] + rng.uniform(-0.06, 0.06), rng.uniform(0.3, 0.6)
        img[_ellipse(x, y, cx, cy, 0.04, 0.04)] = 0.6
    if labels[3]:
        side = rng.choice((-1, 1))
        patch = _ellipse(x, y, 0.5 + side * anatomy["lung_dx"], rng.uniform(0.35, 0.6), 0.13, 0.13)
        img[patch] += 0.18 * rng.random(patch.sum()).astype(np.float32)
    img += rng.normal(0, 0.12, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def derm_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    x, y = _grid(size)
    skin = np.array([0.85, 0.65, 0.55]) + rng.normal(0, 0.04, 3)
    img = np.ones((size, size, 3), np.float32) * skin
    cx, cy = rng.uniform(0.4, 0.6, 2)
    if label == 0:  # nevus: small, round, uniform brown
        mask = _ellipse(x, y, cx, cy, r := rng.uniform(0.12, 0.24), r)
        img[mask] = np.array([0.45, 0.3, 0.2])
    elif label == 1:  # melanoma: large, irregular border, several colours
        angle = np.arctan2(y - cy, x - cx)
        radius = rng.uniform(0.16, 0.26) + rng.uniform(0.02, 0.06) * np.sin(angle * rng.integers(3, 7) + rng.uniform(0, 6))
        mask = np.hypot(x - cx, y - cy) <= radius
        img[mask] = np.array([0.38, 0.24, 0.17])
        blot = mask & _ellipse(x, y, cx + 0.06, cy, 0.1, 0.08)
        img[blot] = np.array([0.36, 0.3, 0.36])
    else:  # keratosis: light, waxy, speckled
        mask = _ellipse(x, y, cx, cy, rng.uniform(0.18, 0.26), rng.uniform(0.14, 0.2))
        img[mask] = np.array([0.52, 0.38, 0.28])
        img[mask & (rng.random((size, size)) < 0.08)] = np.array([0.35, 0.25, 0.18])
    img += rng.normal(0, 0.12, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


#: share of source images drawn in grey: the targets include grayscale modalities (radiographs), and
#: a source of colour images alone leaves features that do not transfer to them (LP on synth_cxr at chance)
SOURCE_GRAY_FRACTION = 0.5


def source_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    x, y = _grid(size)
    gray = rng.random() < SOURCE_GRAY_FRACTION
    fg, bg = rng.uniform(0.5, 1.0, 3), rng.uniform(0.0, 0.4, 3)
    if gray:
        fg, bg = np.full(3, fg.mean()), np.full(3, bg.mean())
    cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.18, 0.3)
    freq = rng.uniform(4, 8)
    name = SOURCE_CLASSES[label]
    if name == "disk":
        mask = _ellipse(x, y, cx, cy, r, r)
    elif name == "square":
        mask = (abs(x - cx) < r) & (abs(y - cy) < r)
    elif name == "ring":
        d = np.hypot(x - cx, y - cy)
        mask = (d < r) & (d > r * 0.6)
    elif name == "cross":
        mask = ((abs(x - cx) < r / 3) & (abs(y - cy) < r)) | ((abs(y - cy) < r / 3) & (abs(x - cx) < r))
    elif name == "hstripes":
        mask = np.sin(y * freq * 2 * np.pi) > 0
    elif name == "vstripes":
        mask = np.sin(x * freq * 2 * np.pi) > 0
    elif name == "checker":
        mask = (np.sin(x * freq * np.pi) > 0) ^ (np.sin(y * freq * np.pi) > 0)
    else:  # triangle
        mask = (y - cy < r) & (y - cy > -r) & (abs(x - cx) < (y - cy + r) / 2)
    img = np.where(mask[..., None], fg, bg).astype(np.float32)
    img += rng.normal(0, 0.05, (size, size, 1) if gray else img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _write(raw: Path, rows: list[dict], images: list[np.ndarray], name: str) -> dict:
    """PNG files and labels.csv; the manifest is written last so a half-generated folder is never taken as done."""
    (raw / "images").mkdir(parents=True, exist_ok=True)
    for row, img in zip(rows, images):
        Image.fromarray(img).save(raw / row["path"])
    with atomic_path(raw / "labels.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    print(f"[synthetic] {name}: wrote {len(rows)} images to {raw}", file=sys.stderr, flush=True)
    return {"root": str(raw.resolve()), "generated": name, "n": len(rows)}


def generate_cxr(raw: Path, options: dict) -> dict:
    rng = np.random.default_rng(int(options["seed"]))
    size, n_patients = int(options["size"]), int(options["n_patients"])
    rows, images = [], []
    for pid in range(n_patients):
        split = "test" if pid % 10 >= 7 else "train"
        anatomy = {"lung_dx": rng.uniform(0.2, 0.24), "heart_rx": rng.uniform(0.12, 0.17)}
        for view in range(2):
            labels = (rng.random(len(CXR_FINDINGS)) < np.array(CXR_PREVALENCE)).astype(int)
            path = f"images/p{pid:04d}_v{view}.png"
            rows.append({"path": path, "split": split, "group": f"p{pid:04d}",
                         **dict(zip(CXR_FINDINGS, labels.tolist()))})
            images.append(cxr_image(rng, labels, size, anatomy))
    return _write(raw, rows, images, "synth_cxr")


def _single_label(raw: Path, options: dict, classes, freq, draw: Callable, name: str) -> dict:
    rng = np.random.default_rng(int(options["seed"]))
    size, n = int(options["size"]), int(options["n"])
    labels = rng.choice(len(classes), size=n, p=np.asarray(freq) / np.sum(freq))
    rows, images = [], []
    for i, label in enumerate(labels):
        rows.append({"path": f"images/{i:05d}.png", "split": "test" if i % 10 >= 7 else "train",
                     "label": classes[label]})
        images.append(draw(rng, int(label), size))
    return _write(raw, rows, images, name)


def _options(seed: int, **counts: Int) -> Settings:
    return Settings(seed=Int(seed, minimum=0, doc="seed of the generator"),
                    size=Int(40, minimum=8, doc="side of the generated images, px"), **counts)


def _csv(task: str, classes, channels: int):
    def read(manifest, options):
        opts = {"task": task, "channels": channels, "classes": list(classes)}
        if task != "multilabel":
            opts["label_columns"] = ["label"]
        return read_csv_table(manifest, opts)
    return read


DATASETS.register("synth_cxr")(DatasetSpec(
    fetch=generate_cxr, read=_csv("multilabel", CXR_FINDINGS, 1),
    metrics=("map", "auroc", "macro_f1"), primary_metric="map",
    options=_options(0, n_patients=Int(160, minimum=5, doc="patients (two views each)")),
    description="Synthetic chest-X-ray-like, grayscale, 4 imbalanced findings (multi-label), 2 views per patient."))

DATASETS.register("synth_derm")(DatasetSpec(
    fetch=lambda raw, o: _single_label(raw, o, DERM_CLASSES, DERM_FREQ, derm_image, "synth_derm"),
    read=_csv("multiclass", DERM_CLASSES, 3),
    metrics=("accuracy", "auroc", "kappa", "macro_f1"), primary_metric="accuracy",
    options=_options(1, n=Int(320, minimum=10, doc="images")),
    description="Synthetic dermoscopy-like, RGB, 3 imbalanced classes."))

DATASETS.register("synth_source")(DatasetSpec(
    fetch=lambda raw, o: _single_label(raw, o, SOURCE_CLASSES, [1] * len(SOURCE_CLASSES), source_image,
                                       "synth_source"),
    read=_csv("multiclass", SOURCE_CLASSES, 3),
    metrics=("accuracy",), primary_metric="accuracy",
    options=_options(2, n=Int(800, minimum=10, doc="images")),
    description="Synthetic source domain (shapes and textures) for offline pretraining."))
