"""Auto-RGN's rates from the state a real job starts in: a pretrained backbone and a new head built by the
registry (torchvision's zero biases included), for ResNet-50, DenseNet-121 and VGG-19 with heads of 2, 5
and 14 classes.

Offline there are no ImageNet weights, so each backbone is first pretrained the way the pipeline does it
(full fine-tuning on the synthetic source domain, shortened). Then, per head size, the first probe of
Auto-RGN (5 batches) gives each tensor's rate; printed: the median and the smallest backbone rate as a
fraction of lr, next to what the same probe gives when the new head takes part in the maximum (the
implementation before the fix), and the share of backbone tensors that one epoch of Trainer.fit moves.

    python benchmarks/auto_rgn_rates.py            # real architectures (a GPU makes it quick)
    python benchmarks/auto_rgn_rates.py --quick    # the *_tiny architectures, seconds on a CPU
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import header, synthetic_store  # noqa: F401  (sets sys.path)


def pretrained_backbone(arch: str, store, device, steps: int, lr: float) -> dict:
    import torch

    from medtl.models import build_network
    from medtl.strategies import STRATEGIES, Context
    from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, SplitData
    from medtl.training.trainer import task_loss

    torch.manual_seed(0)
    net = build_network(arch, len(store.classes)).to(device)
    strategy = STRATEGIES.get("ft")(Context(net=net, init_state={}, lr=lr, epochs=1, steps_per_epoch=steps,
                                            task=store.task, train_targets=store.targets("train"), device=device))
    optimizer = strategy.build_optimizer()
    data = SplitData(store.images, store.indices("train"), store.targets("train"))
    norm = Normalizer(IMAGENET_MEAN, IMAGENET_STD, device)
    net.train()
    done, epoch, losses = 0, 0, []
    while done < steps:
        for x, y in data.iterate(32, data.shuffled(0, epoch)):
            loss = task_loss(store.task, net(norm(x)), y.to(device), None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            done += 1
            if done >= steps:
                break
        epoch += 1
    print(f"   {arch}: pretraining loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f} in {steps} steps "
          f"(lr {lr:g})", flush=True)
    return {k: v.detach().cpu().clone() for k, v in net.backbone_state().items()}


def rates_for(arch: str, backbone: dict, n_classes: int, store, device, lr: float = 1e-3) -> dict:
    import torch

    from medtl.models import build_network
    from medtl.strategies import STRATEGIES, Context
    from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, SplitData
    from medtl.training.trainer import LoopSettings, Trainer

    torch.manual_seed(1)
    net = build_network(arch, n_classes)
    net.load_backbone(backbone)
    net.to(device)
    # targets for the new head: the store's images, labelled with n_classes classes (multi-label for 14)
    rng = np.random.default_rng(n_classes)
    n = len(store.labels)
    task = "multilabel" if n_classes == 14 else ("binary" if n_classes == 2 else "multiclass")
    if task == "multilabel":
        targets = (rng.random((n, n_classes)) < 0.3).astype(np.float32)
    else:
        targets = np.eye(n_classes, dtype=np.float32)[store.labels[store.classes].to_numpy().argmax(1) % n_classes]
    train_idx, val_idx = store.indices("train"), store.indices("val")
    train = SplitData(store.images, train_idx, targets[train_idx])
    val = SplitData(store.images, val_idx, targets[val_idx])
    ctx = Context(net=net, init_state={}, lr=lr, epochs=1, steps_per_epoch=train.n_batches(32), task=task,
                  train_targets=targets[train_idx], device=device)
    strategy = STRATEGIES.get("auto_rgn")(ctx)  # defaults: 5 probe batches, norm layers frozen
    before = {k: p.detach().clone() for k, p in net.net.named_parameters()}
    loop = LoopSettings(epochs=1, batch_size=32, patience=1, seed=0, monitor="auroc", metrics=["auroc"])
    Trainer(strategy, train, val, Normalizer(IMAGENET_MEAN, IMAGENET_STD, device), loop).fit()

    backbone_rates = [r / lr for k, r in strategy.last_rates.items() if not net.is_head(k)]
    # the rule before the fix: every tensor, the new head included, in the maximum; a zero norm clamped
    old = {k: v if math.isfinite(v) else 0.0 for k, v in strategy.last_rgn.items()}
    for k, p in net.net.named_parameters():
        if k in old and float(before[k].norm()) == 0:
            old[k] = float("inf")
    top = max(old.values())
    old_rates = [0.0 if math.isinf(top) else v / top for k, v in old.items() if not net.is_head(k)]
    trained = [k for k in strategy.last_rates if not net.is_head(k)]
    moved = [k for k in trained if not torch.equal(before[k], net.net.get_parameter(k).detach())]
    return {"median": float(np.median(backbone_rates)), "min": float(np.min(backbone_rates)),
            "old_median": float(np.median(old_rates)), "moved": len(moved) / max(1, len(trained)),
            "n_tensors": len(trained), "frozen_norm": len(strategy.frozen_norm)}


def main(argv=None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny architectures, small images")
    parser.add_argument("--steps", type=int, default=None, help="pretraining steps per architecture")
    parser.add_argument("--archs", nargs="*", default=None, help="architectures (default: all three)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    archs = args.archs or (["resnet_tiny", "densenet_tiny", "vgg_tiny"] if args.quick else
                           ["resnet50", "densenet121", "vgg19"])
    size, n_images = (32, 200) if args.quick else (112, 1200)
    steps = args.steps or (20 if args.quick else 300)
    header(f"Auto-RGN first-probe rates from a pretrained backbone and a new head ({device})")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "store", n_images, size, n_classes=4)
        for arch in archs:
            t0 = time.perf_counter()
            # VGG has no BatchNorm: Adam at 1e-3 kills its ReLUs from scratch (a dead backbone has no gradient)
            backbone = pretrained_backbone(arch, store, device, steps, lr=1e-4 if "vgg" in arch else 1e-3)
            for n_classes in (2, 5, 14):
                r = rates_for(arch, backbone, n_classes, store, device)
                results[(arch, n_classes)] = r
                print(f"   {arch:12s} head of {n_classes:2d}: median backbone rate {100 * r['median']:7.3f} % of lr "
                      f"(smallest {100 * r['min']:.2e} %); with the head in the maximum {100 * r['old_median']:.2e} %; "
                      f"one epoch moved {100 * r['moved']:.0f} % of {r['n_tensors']} trained backbone tensors "
                      f"({r['frozen_norm']} normalisation tensors frozen)", flush=True)
            print(f"   ({arch}: {time.perf_counter() - t0:.1f} s with {steps} pretraining steps)", flush=True)
    worst = min(r["median"] for r in results.values())
    print(f"RATIO smallest median backbone rate / lr: {worst:.4f} (target >= 0.01)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
