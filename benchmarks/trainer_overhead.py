"""Trainer overhead: a training epoch of the pipeline's Trainer against a bare PyTorch loop doing the
same forward / backward / optimizer step on the same batches (same store, same order, same
normalisation, Adam, full fine-tuning).

Printed, measured side by side in this run (epochs in turns, median):
  - RATIO train epoch: Trainer.run_epoch / bare loop (target: within 5 %);
  - RATIO loop without checkpoints: Trainer.fit over 3 epochs (training, validation, metrics,
    best-weights snapshot, history) / the bare loop's 3 x (training + validation predictions);
  - RATIO full loop: the same with a checkpoint after every epoch (copied to host memory, written
    in the background, and the wait for the last one, which in a job overlaps with the final
    predictions instead);
and that both computed the same thing (max |parameter difference| after one epoch each).

    python benchmarks/trainer_overhead.py             # ResNet-50 at 64 px, and the demo's tiny ResNet at 32 px
    python benchmarks/trainer_overhead.py --quick     # seconds
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import tempfile
from pathlib import Path

from _common import header, interleaved, median, spread, synthetic_store

import numpy as np
import torch
import torch.nn.functional as F


def measure(arch: str, size: int, n: int, batch_size: int, repeats: int, tmp: Path, fit_epochs: int = 3) -> dict:
    from medtl.data.store import load_store
    from medtl.models import build_network
    from medtl.strategies import STRATEGIES, Context
    from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, SplitData
    from medtl.training.trainer import LoopSettings, Trainer

    root = tmp / f"{arch}_{size}"
    synthetic_store(root, n, size)
    store = load_store(root)
    device = torch.device("cpu")
    torch.manual_seed(0)
    start_net = build_network(arch, len(store.classes))
    train_idx, train_y = store.indices("train"), store.targets("train")
    val_idx = store.indices("val")

    def trainer_for(net, checkpoint=None, epochs=1):
        ctx = Context(net=net, init_state={}, lr=1e-3, epochs=epochs, steps_per_epoch=1, task=store.task,
                      train_targets=train_y, device=device)
        strategy = STRATEGIES.get("ft")(ctx)
        train = SplitData(store.images, train_idx, train_y)
        val = SplitData(store.images, val_idx, store.targets("val"))
        loop = LoopSettings(epochs=epochs, batch_size=batch_size, patience=epochs, seed=0, monitor="accuracy",
                            metrics=["accuracy", "auroc"], eval_batch_size=256)
        return Trainer(strategy, train, val, Normalizer(IMAGENET_MEAN, IMAGENET_STD, device), loop,
                       checkpoint=checkpoint, signature="bench")

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    targets = torch.as_tensor(train_y)
    order_of = SplitData(store.images, train_idx, train_y).shuffled

    def bare_epoch(net, optimizer, epoch):
        """What one writes by hand: the same batches (rows in ascending order within each batch)."""
        net.train()
        order = order_of(0, epoch)
        for start in range(0, len(order), batch_size):
            pos = np.sort(order[start:start + batch_size])
            x = torch.from_numpy(store.images[train_idx[pos]]).permute(0, 3, 1, 2).float().contiguous()
            x = (x - mean) / std
            loss = F.cross_entropy(net(x), targets[pos].argmax(dim=1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def bare_predict(net):
        net.eval()
        out = []
        for start in range(0, len(val_idx), 256):
            x = torch.from_numpy(store.images[val_idx[start:start + 256]]).permute(0, 3, 1, 2).float().contiguous()
            out.append(torch.softmax(net((x - mean) / std), dim=1))
        return torch.cat(out).numpy()

    # the same computation: one epoch each from the same start
    net_a, net_b = copy.deepcopy(start_net), copy.deepcopy(start_net)
    bare_epoch(net_a, torch.optim.Adam(net_a.parameters(), lr=1e-3), 0)
    tr = trainer_for(net_b)
    tr.run_epoch(0, tr.strategy.build_optimizer(), None)
    with torch.no_grad():
        same = max(float((p - q).abs().max()) for p, q in zip(net_a.parameters(), net_b.parameters()))

    # steady-state epochs, in turns
    bare_net, pipe_net = copy.deepcopy(start_net), copy.deepcopy(start_net)
    bare_opt = torch.optim.Adam(bare_net.parameters(), lr=1e-3)
    pipe = trainer_for(pipe_net)
    pipe_opt = pipe.strategy.build_optimizer()
    epochs = {"bare": 0, "trainer": 0}

    def run_bare():
        epochs["bare"] += 1
        bare_epoch(bare_net, bare_opt, epochs["bare"])

    def run_trainer():
        epochs["trainer"] += 1
        pipe.run_epoch(epochs["trainer"], pipe_opt, None)

    fit_net, fitbare_net = copy.deepcopy(start_net), copy.deepcopy(start_net)
    ckpt = tmp / "resume.ckpt"

    nockpt_net = copy.deepcopy(start_net)

    def run_fit():
        # a whole job's loop: train, validate, metrics, best-weights snapshot, checkpoint after every epoch
        with contextlib.redirect_stderr(io.StringIO()):
            trainer_for(fit_net, checkpoint=ckpt, epochs=fit_epochs).fit()
        ckpt.unlink(missing_ok=True)

    def run_fit_nockpt():
        with contextlib.redirect_stderr(io.StringIO()):
            trainer_for(nockpt_net, checkpoint=None, epochs=fit_epochs).fit()

    def run_fit_bare():
        optimizer = torch.optim.Adam(fitbare_net.parameters(), lr=1e-3)
        for epoch in range(fit_epochs):
            bare_epoch(fitbare_net, optimizer, epoch)
            bare_predict(fitbare_net)

    times = interleaved({"bare": run_bare, "trainer": run_trainer, "fit": run_fit, "fit_nockpt": run_fit_nockpt,
                         "fit_bare": run_fit_bare},
                        repeats=repeats, warmup=1)
    return {"times": times, "same": same, "steps": -(-len(train_idx) // batch_size)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a few seconds: for the smoke test")
    args = ap.parse_args(argv)
    configs = [("resnet50", 64, 320, 32), ("resnet_tiny", 32, 500, 16)]
    if args.quick:
        configs, args.repeats = [("resnet_tiny", 32, 100, 16)], 1
    torch.set_num_threads(1)
    header("trainer overhead: the pipeline's training epoch vs a bare PyTorch loop")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch, size, n, bs in configs:
            r = measure(arch, size, n, bs, args.repeats, Path(tmp))
            t = r["times"]
            print(f"-- {arch} at {size} px, batch {bs}, {r['steps']} steps per epoch")
            for k, label in (("bare", "bare loop, training epoch"), ("trainer", "Trainer.run_epoch"),
                             ("fit_bare", "bare loop, 3 x (training + validation)"),
                             ("fit_nockpt", "Trainer.fit, 3 epochs, no checkpoint"),
                             ("fit", "Trainer.fit, 3 epochs")):
                print(f"   {label:40s} {spread(t[k])}")
            train_ratio = median(t["trainer"]) / median(t["bare"])
            loop_ratio = median(t["fit_nockpt"]) / median(t["fit_bare"])
            fit_ratio = median(t["fit"]) / median(t["fit_bare"])
            print(f"   RATIO train epoch: Trainer.run_epoch / bare loop = {train_ratio:.3f} "
                  f"({(train_ratio - 1) * 100:+.1f} %)")
            print(f"   RATIO loop without checkpoints: Trainer.fit / bare training + validation = {loop_ratio:.3f} "
                  f"({(loop_ratio - 1) * 100:+.1f} %)")
            print(f"   RATIO full loop: Trainer.fit with checkpoints / bare training + validation = {fit_ratio:.3f} "
                  f"({(fit_ratio - 1) * 100:+.1f} %)")
            print(f"   same computation: max |parameter difference| after one epoch = {r['same']:.1e}")
            out[arch] = {"train": train_ratio, "loop": loop_ratio, "fit": fit_ratio, "same": r["same"]}
    return out


if __name__ == "__main__":
    main()
