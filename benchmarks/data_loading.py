"""Data path: the prepared uint8 store against decoding image files every epoch.

Baseline, the usual approach: torchvision ``ImageFolder`` + ``DataLoader`` with
Resize / CenterCrop / ToTensor / Normalize, i.e. every image decoded with PIL, resized and
cropped in every epoch (best of ``num_workers`` 0 and the CPU count, persistent workers).
Pipeline: ``medtl.training.batches`` over the store the ``prepare_dataset`` rule writes once
from the same files (its one-off cost is printed too): per batch one gather of uint8 rows from
the memory map; conversion and normalisation run on the training device.

Printed per image format, as throughput ratios measured side by side in this run (epochs in
turns, median): pipeline host path (what the CPU does per batch when a GPU trains: uint8 batch
ready for the device), and pipeline with the normalisation on this CPU too (training on CPU).
Both produce the same normalised tensors as the baseline (max abs difference printed).

    python benchmarks/data_loading.py            # 300 images of 256 px -> 224, JPEG and PNG
    python benchmarks/data_loading.py --quick    # seconds: 48 small images
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import header, interleaved, median

import numpy as np
import pandas as pd
import torch


def make_images(root: Path, n: int, size: int, fmt: str, seed: int = 0) -> list[Path]:
    """Smooth random RGB images with some texture (compress like photographs, not like noise), 3 classes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((size + 32 * (i % 3), size), Image.BICUBIC)  # varied aspect ratios
        arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 12, size=(size, size + 32 * (i % 3), 3))
        path = root / f"class{i % 3}" / f"img{i:04d}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(path)
    return paths


def prepare(paths: list[Path], out: Path, resize: int, crop: int):
    """The prepare_dataset rule's path: decode, resize, crop once into the uint8 store."""
    from medtl.data.imageio import fill_from_files
    from medtl.data.store import write_store

    labels = pd.DataFrame({"index": range(len(paths)), "split": "train", "group": "",
                           "image_id": [p.name for p in paths], "c0": 0, "c1": 0, "c2": 0})
    for i, p in enumerate(paths):
        labels.loc[i, p.parent.name.replace("class", "c")] = 1
    meta = {"name": "bench", "task": "multiclass", "classes": ["c0", "c1", "c2"], "metrics": ["accuracy"],
            "primary_metric": "accuracy"}
    import contextlib
    import io
    with contextlib.redirect_stderr(io.StringIO()):
        return write_store(out, len(paths), (crop, crop), 3, fill_from_files(paths, resize, crop, 3), labels, meta)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=256, help="shorter side of the source images")
    ap.add_argument("--resize", type=int, default=224)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per variant")
    ap.add_argument("--formats", default="jpg,png")
    ap.add_argument("--quick", action="store_true", help="a few seconds: for the smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.size, args.resize, args.crop, args.repeats, args.formats = 48, 64, 56, 56, 1, "jpg"
        args.batch_size = 16
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, SplitData

    torch.set_num_threads(1)
    header("data loading: prepared uint8 store vs decoding image files every epoch")
    print(f"   {args.n} images of {args.size} px (shorter side) -> resize {args.resize}, centre crop {args.crop}, "
          f"batch {args.batch_size}")
    results = {}
    cpus = os.cpu_count() or 1
    worker_options = [0] if args.quick else sorted({0, cpus})
    for fmt in args.formats.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_images(Path(tmp) / "images", args.n, args.size, fmt)
            t0 = time.perf_counter()
            store = prepare(paths, Path(tmp) / "store", args.resize, args.crop)
            prep_s = time.perf_counter() - t0

            tf = transforms.Compose([transforms.Resize(args.resize), transforms.CenterCrop(args.crop),
                                     transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
            folder = datasets.ImageFolder(str(Path(tmp) / "images"), transform=tf)
            loaders = {w: DataLoader(folder, batch_size=args.batch_size, shuffle=True, num_workers=w,
                                     persistent_workers=w > 0) for w in worker_options}
            split = SplitData(store.images, np.arange(len(store.images)), np.zeros((len(store.images), 1)))
            norm = Normalizer(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
            epoch = [0]

            def baseline(w):
                def run():
                    for x, _ in loaders[w]:
                        pass
                return run

            def pipeline(normalise: bool):
                def run():
                    epoch[0] += 1
                    for x, _ in split.iterate(args.batch_size, split.shuffled(0, epoch[0])):
                        if normalise:
                            norm(x)
                return run

            variants = {f"baseline, {w} workers": baseline(w) for w in worker_options}
            variants["pipeline, host path (uint8 batch for the device)"] = pipeline(False)
            variants["pipeline, + normalisation on this CPU"] = pipeline(True)
            times = interleaved(variants, repeats=args.repeats, warmup=1)
            # same tensors: the store path against the decode path, image by image
            ordered = sorted(range(len(paths)), key=lambda i: folder.samples[i][0])
            by_path = {str(p): i for i, p in enumerate(paths)}
            diffs = []
            for j in ordered[:8]:
                x_ref = folder[j][0]
                x_store = norm(torch.from_numpy(np.array(store.images[[by_path[folder.samples[j][0]]]])))[0]
                diffs.append(float((x_ref - x_store).abs().max()))
            del loaders  # ends persistent workers
            rate = {k: args.n / median(v) for k, v in times.items()}
            best_base = max((k for k in rate if k.startswith("baseline")), key=rate.get)
            print(f"-- {fmt.upper()}: prepare once (decode + resize + crop into the store): {prep_s:.2f} s "
                  f"({args.n / prep_s:.0f} images/s)")
            for k, r in rate.items():
                print(f"   {k:52s} {r:9.0f} images/s  (epoch {median(times[k]):.3f} s)")
            for k in [k for k in rate if k.startswith("pipeline")]:
                ratio = rate[k] / rate[best_base]
                print(f"   RATIO {k} / best baseline ({best_base}): {ratio:.1f}x")
                results[(fmt, k)] = ratio
            print(f"   same tensors: max |baseline - pipeline| = {max(diffs):.2e} over 8 images")
            results[(fmt, "maxdiff")] = max(diffs)
    return results


if __name__ == "__main__":
    main()
