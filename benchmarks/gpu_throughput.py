"""GPU efficiency: training images/s of the pipeline's own epoch (Trainer.run_epoch, full fine-tuning,
Adam, batches from a uint8 array through pinned memory and non-blocking copies, normalisation on
the GPU) for ResNet-50, DenseNet-121 and VGG-19 at 224 px, and the fraction of the GPU's peak.

Variants, measured side by side in this run: fp32 (``training.amp: false``), bf16 autocast +
channels_last (``training.amp: true`` (the default) + ``training.channels_last: true``), and with
``--compile`` also + torch.compile (``training.compile: true``). Determinism as in the jobs
(torch.use_deterministic_algorithms(True, warn_only=True)).

Fraction of peak = forward FLOPs per image (torch.utils.flop_counter.FlopCounterMode) x 3
(forward + backward) x images/s / the GPU's dense bf16 peak (table below, by device name).
Without a GPU it runs a tiny network on the CPU and says so.

    python benchmarks/gpu_throughput.py [--compile] [--batch-size 64] [--steps 30]
    python benchmarks/gpu_throughput.py --quick
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time

from _common import header, median

import numpy as np
import torch

# dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets; first match wins
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.4), ("H200", 989.4), ("H100", 989.4),
    ("H800", 989.4), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0),
    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("A40", 149.7), ("RTX 4090", 165.2), ("RTX 3090", 71.0),
]


def peak_flops(name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops * 1e12
    return None


def forward_flops(net, size: int, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size, device=device))
    return float(counter.get_total_flops())


def throughput(arch: str, size: int, batch_size: int, steps: int, repeats: int, device, amp: bool,
               channels_last: bool, compile: bool) -> tuple[list[float], float]:
    """images/s of Trainer.run_epoch over ``steps`` batches (median of ``repeats`` epochs after one warm-up)."""
    from medtl.models import build_network
    from medtl.strategies import STRATEGIES, Context
    from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, SplitData
    from medtl.training.trainer import LoopSettings, Trainer

    torch.manual_seed(0)
    n = batch_size * steps
    n_classes = 14
    net = build_network(arch, n_classes).to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    flops = forward_flops(net, size, device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    targets = (rng.random((n, n_classes)) < 0.2).astype(np.float32)
    cuda = device.type == "cuda"
    train = SplitData(images, np.arange(n), targets, pin=cuda)
    ctx = Context(net=net, init_state={}, lr=1e-4, epochs=1, steps_per_epoch=steps, task="multilabel",
                  train_targets=targets, device=device)
    strategy = STRATEGIES.get("ft")(ctx)
    loop = LoopSettings(epochs=1, batch_size=batch_size, patience=1, seed=0, monitor="auroc", metrics=["auroc"],
                        amp=amp, compile=compile)
    trainer = Trainer(strategy, train, train, Normalizer(IMAGENET_MEAN, IMAGENET_STD, device, channels_last), loop)
    optimizer = strategy.build_optimizer()
    rates = []
    for epoch in range(1 + repeats):  # epoch 0: warm-up (cuDNN algorithm choice, compilation)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.run_epoch(epoch, optimizer, None)  # returns the epoch's mean loss: synchronises once
        if cuda:
            torch.cuda.synchronize()
        if epoch:
            rates.append(n / (time.perf_counter() - t0))
    return rates, flops


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="resnet50,densenet121,vgg19")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30, help="batches per timed epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--quick", action="store_true", help="a few seconds: for the smoke test")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda or args.quick:
        if not cuda:
            args.archs, args.size = "resnet_tiny", 32
        args.batch_size, args.steps, args.repeats = 16, 4 if args.quick else 16, 1 if args.quick else 3
    device = torch.device("cuda" if cuda else "cpu")
    torch.use_deterministic_algorithms(True, warn_only=True)  # as the training jobs run
    if not cuda:
        torch.set_num_threads(1)
    header("GPU throughput: training images/s of the pipeline's epoch, and the fraction of the GPU's peak")
    name = torch.cuda.get_device_name(0) if cuda else "none"
    peak = peak_flops(name) if cuda else None
    if not cuda:
        print("   GPU not available: a tiny network on the CPU, to check the script runs; "
              "no fraction of peak. Run this on a GPU machine for the figures.")
    else:
        print(f"   {name}: dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else
              f"   {name}: peak unknown (add it to PEAK_BF16_TFLOPS)")
    print(f"   {args.size} px, batch {args.batch_size}, {args.steps} steps per timed epoch, median of {args.repeats}")
    variants = [("fp32", False, False, False)]
    if cuda:  # autocast and channels_last are GPU settings: the jobs never use them on a CPU
        variants.append(("bf16 + channels_last", True, True, False))
    if args.compile:
        variants.append(("bf16 + channels_last + compile" if cuda else "fp32 + compile", cuda, cuda, True))
    out = {}
    for arch in args.archs.split(","):
        rows = {}
        for label, amp, cl, comp in variants:
            with contextlib.redirect_stderr(io.StringIO()):
                rates, flops = throughput(arch, args.size, args.batch_size, args.steps, args.repeats, device,
                                          amp=amp, channels_last=cl and cuda, compile=comp)
            rate = median(rates)
            frac = 3 * flops * rate / peak if peak else None
            rows[label] = rate
            print(f"   {arch:12s} {label:32s} {rate:8.1f} images/s  "
                  f"({flops / 1e9:.3g} GFLOP/image forward)"
                  + (f"  {100 * frac:5.1f} % of peak" if frac is not None else ""))
            out[(arch, label)] = {"images_per_s": rate, "fraction_of_peak": frac}
            if cuda:
                torch.cuda.empty_cache()
        base = rows["fp32"]
        for label in list(rows)[1:]:
            print(f"   RATIO {arch} {label} / fp32 = {rows[label] / base:.2f}x")
    return out


if __name__ == "__main__":
    main()
