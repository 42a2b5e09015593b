"""Frozen computation done once: an LP job on cached backbone features against the same job running
the frozen backbone in every epoch (``medtl.training.job.run`` both ways, equal epochs, no early stop).

Printed, measured side by side in this run (jobs in turns, median):
  - RATIO job: uncached job time / cached job time (the features job is shared: it runs once per
    (dataset, architecture, weights) for 3 learning rates x 3 seeds x LP and LP-FT = 18 jobs);
  - RATIO amortised: uncached / (cached + features job / 18), the first study's sharing;
  - RATIO worst case: uncached / (cached + the whole features job), a features job used by one job;
and that both give the same selected epoch and metrics (max abs difference).

    python benchmarks/feature_cache.py                    # ResNet-50 at 224 px, 20 epochs
    python benchmarks/feature_cache.py --arch vgg19
    python benchmarks/feature_cache.py --quick            # seconds: a tiny network at 32 px
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import tempfile
from pathlib import Path

from _common import header, interleaved, median, spread, synthetic_store

import torch

SHARING = 18  # jobs of the first study reading one features file: (LP, LP-FT) x 3 learning rates x 3 seeds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n", type=int, default=40, help="images (60%% train, 20%% val, 20%% test)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a few seconds: for the smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.arch, args.size, args.n, args.epochs, args.repeats = "resnet_tiny", 32, 60, 5, 1
    from medtl.models import build_network
    from medtl.training import features as F
    from medtl.training import job

    torch.set_num_threads(args.threads)
    header("feature cache: LP job on cached backbone features vs running the frozen backbone every epoch")
    print(f"   {args.arch} at {args.size} px, {args.n} images, {args.epochs} epochs, batch {args.batch_size}")
    weights_entry = {"type": "imagenet"}
    hp = {"dataset": {"name": "bench", "metrics": None, "primary_metric": None},
          "arch": {"name": args.arch, "weights": weights_entry, "preprocess": {"resize": args.size, "crop": args.size}},
          "strategy": {"name": "lp", "type": "lp", "settings": {}},
          "training": {"epochs": args.epochs, "batch_size": args.batch_size, "patience": args.epochs,
                       "device": "cpu", "optimizer": "adam", "eval_batch_size": 64},
          "lr": 1e-3, "seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic_store(tmp / "store", args.n, args.size)
        torch.manual_seed(1)  # stands in for the pretrained weights: same shapes, same cost
        weights = tmp / "weights.pt"
        torch.save(build_network(args.arch, 3).backbone_state(), weights)
        npy = tmp / "features" / "imagenet.npy"
        spec = F.describe(args.arch, weights_entry, None)
        results = {}

        def quiet(fn):
            with contextlib.redirect_stderr(io.StringIO()):
                return fn()

        def extract():
            quiet(lambda: F.extract(spec, str(tmp / "store"), str(weights), str(npy), str(F.meta_path(npy)),
                                    device="cpu", batch_size=64, threads=args.threads))

        def train(name, cached):
            def run():
                results[name] = quiet(lambda: job.run(copy.deepcopy(hp), str(tmp / "store"), str(weights),
                                                      str(tmp / name), str(tmp / f"{name}.ckpt"), threads=args.threads,
                                                      features_file=str(npy) if cached else None))
            return run

        extract()  # the cached job needs the file from the start
        times = interleaved({"features job (once per dataset, arch, weights)": extract,
                             "LP job, uncached": train("uncached", False),
                             "LP job, cached": train("cached", True)}, repeats=args.repeats)
    for k, v in times.items():
        print(f"   {k:48s} {spread(v)}")
    t_plain, t_cached = median(times["LP job, uncached"]), median(times["LP job, cached"])
    t_extract = median(times["features job (once per dataset, arch, weights)"])
    a, b = results["uncached"], results["cached"]
    diff = max(abs(a[s][k] - b[s][k]) for s in ("val", "test") for k in a[s] if not math.isnan(a[s][k]))
    ratios = {"job": t_plain / t_cached, "amortised": t_plain / (t_cached + t_extract / SHARING),
              "worst": t_plain / (t_cached + t_extract)}
    print(f"   RATIO job: uncached / cached LP job = {ratios['job']:.1f}x  ({args.epochs} epochs)")
    print(f"   RATIO amortised: uncached / (cached + features job / {SHARING} jobs sharing it) = "
          f"{ratios['amortised']:.1f}x")
    print(f"   RATIO worst case: uncached / (cached + whole features job) = {ratios['worst']:.1f}x")
    print(f"   same results: best epoch {a['best_epoch']} vs {b['best_epoch']}, "
          f"max |metric difference| = {diff:.1e}")
    return {**ratios, "same_epoch": a["best_epoch"] == b["best_epoch"], "maxdiff": diff}


if __name__ == "__main__":
    main()
