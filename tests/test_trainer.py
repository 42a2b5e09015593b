"""Training jobs: determinism, kill-and-resume, damaged checkpoints and the files a job leaves."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from medtl.data import DATASETS
from medtl.data.prepare import prepare
from medtl.io import write_json
from medtl.training import job
from medtl.training.trainer import Trainer


@pytest.fixture(scope="module")
def cxr_store(tmp_path_factory):
    """The synthetic chest X-ray source through the real fetch -> CSV adapter -> prepare path, kept small."""
    base = tmp_path_factory.mktemp("synth_cxr")
    spec = DATASETS.get("synth_cxr")
    options = {**spec.options, "n_patients": 40, "size": 40}
    write_json(base / "manifest.json", spec.fetch(base / "raw", options))
    entry = {"type": "synth_cxr", "options": options, "val_fraction": 0.2, "split_seed": 0}
    prepare("synth_cxr", entry, str(base / "manifest.json"), 36, 32, str(base / "store"))
    return str(base / "store")


def hparams(strategy="ft", settings=None, arch="densenet_tiny", epochs=4, seed=0, lr=3e-3):
    return {
        "dataset": {"name": "synth_cxr", "metrics": None, "primary_metric": None},
        "arch": {"name": arch, "weights": {"type": "none"}, "preprocess": {"resize": 36, "crop": 32}},
        "strategy": {"name": strategy, "type": strategy, "settings": settings or {}},
        "training": {"epochs": epochs, "batch_size": 16, "patience": epochs, "device": "cpu",
                     "optimizer": "adam", "eval_batch_size": 64},
        "lr": lr, "seed": seed,
    }


def run_job(hp, store, tmp_path, name):
    out, ckpt = tmp_path / name / "out", tmp_path / name / "resume.ckpt"
    result = job.run(copy.deepcopy(hp), store, None, str(out), str(ckpt))
    return result, out, ckpt


def comparable(result: dict) -> str:
    """Everything but the wall time, as text: exact, and NaN (a class absent from a split) equals NaN."""
    return json.dumps({k: v for k, v in result.items() if k not in job.MACHINE_DEPENDENT}, sort_keys=True)


def history(out) -> pd.DataFrame:
    return pd.read_csv(out / "history.csv").drop(columns="seconds")


class Killed(Exception):
    """Stands in for the job being killed in the middle of an epoch."""


def kill_at(monkeypatch, epoch_to_die: int):
    original = Trainer.run_epoch

    def run_epoch(self, epoch, optimizer, scheduler):
        if epoch == epoch_to_die:
            raise Killed(f"killed in epoch {epoch}")
        return original(self, epoch, optimizer, scheduler)

    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)


def count_epochs(monkeypatch) -> list[int]:
    ran = []
    original = Trainer.run_epoch

    def run_epoch(self, epoch, optimizer, scheduler):
        ran.append(epoch)
        return original(self, epoch, optimizer, scheduler)

    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)
    return ran


def test_the_synthetic_store(cxr_store):
    from medtl.data.store import load_store

    store = load_store(cxr_store)
    assert store.task == "multilabel" and store.images.shape[1:] == (32, 32, 1)
    assert store.meta["counts"]["val"] > 0 and store.meta["primary_metric"] == "map"
    train = set(store.labels.loc[store.labels["split"] == "train", "group"])
    val = set(store.labels.loc[store.labels["split"] == "val", "group"])
    assert not train & val  # both views of a patient stay in the same split


# -- (1) determinism -----------------------------------------------------------------------------------------
def test_same_seed_gives_identical_results(cxr_store, tmp_path):
    hp = hparams("ft", epochs=2)
    a, out_a, _ = run_job(hp, cxr_store, tmp_path, "a")
    b, out_b, _ = run_job(hp, cxr_store, tmp_path, "b")
    assert comparable(a) == comparable(b)
    pd.testing.assert_frame_equal(history(out_a), history(out_b))
    c, _, _ = run_job(hparams("ft", epochs=2, seed=1), cxr_store, tmp_path, "c")
    assert c["test"] != a["test"]  # the seed matters, so the equality above says something


# -- (2) kill and resume --------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy,settings", [
    ("ft", {}),
    ("spft", {"head_epochs": 1, "top_k": 2, "ema_decay": 0.9}),  # scheduler, EMA and loss weights to restore
    ("auto_rgn", {"probe_batches": 2}),
])
def test_kill_and_resume_matches_an_uninterrupted_run(strategy, settings, cxr_store, tmp_path, monkeypatch, capfd):
    hp = hparams(strategy, settings, epochs=4)
    reference, ref_out, _ = run_job(hp, cxr_store, tmp_path, "reference")

    with monkeypatch.context() as m:
        kill_at(m, 2)
        with pytest.raises(Killed):
            run_job(hp, cxr_store, tmp_path, "killed")
    out, ckpt = tmp_path / "killed" / "out", tmp_path / "killed" / "resume.ckpt"
    assert ckpt.exists() and not (out / "metrics.json").exists()
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1  # epochs 0 and 1 finished

    capfd.readouterr()
    with monkeypatch.context() as m:
        ran = count_epochs(m)
        resumed, _, _ = run_job(hp, cxr_store, tmp_path, "killed")
    assert ran == [2, 3]  # only the epochs that were lost
    assert "resumed from" in capfd.readouterr().err
    assert comparable(resumed) == comparable(reference)
    pd.testing.assert_frame_equal(history(out), history(ref_out))
    assert not ckpt.exists()


def test_checkpoint_of_other_settings_is_not_resumed(cxr_store, tmp_path, monkeypatch, capfd):
    hp = hparams("ft", epochs=3)
    with monkeypatch.context() as m:
        kill_at(m, 2)
        with pytest.raises(Killed):
            run_job(hparams("ft", epochs=3, lr=1e-2), cxr_store, tmp_path, "job")
    capfd.readouterr()
    with monkeypatch.context() as m:
        ran = count_epochs(m)
        result, _, _ = run_job(hp, cxr_store, tmp_path, "job")
    assert ran == [0, 1, 2]
    assert "from other settings; starting over" in capfd.readouterr().err
    reference, _, _ = run_job(hp, cxr_store, tmp_path, "reference")
    assert comparable(result) == comparable(reference)


# -- (3) a damaged checkpoint ------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x02garbage" * 10])
def test_corrupt_checkpoint_is_ignored_with_a_message(content, cxr_store, tmp_path, capfd):
    hp = hparams("ft", epochs=2)
    ckpt = tmp_path / "job" / "resume.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(content)
    result, out, _ = run_job(hp, cxr_store, tmp_path, "job")
    err = capfd.readouterr().err
    assert "ignoring unreadable checkpoint" in err and str(ckpt) in err
    assert result["epochs_run"] == 2 and (out / "metrics.json").exists()
    reference, _, _ = run_job(hp, cxr_store, tmp_path, "reference")
    assert comparable(result) == comparable(reference)


# -- (4) what a finished job leaves -------------------------------------------------------------------------------
def test_outputs_and_metrics_written_last(cxr_store, tmp_path, monkeypatch):
    written = []
    real_write_json, real_atomic = job.write_json, job.atomic_path

    def spy_write_json(path, obj):
        written.append(path.name)
        return real_write_json(path, obj)

    def spy_atomic(path):
        written.append(path.name)
        return real_atomic(path)

    monkeypatch.setattr(job, "write_json", spy_write_json)
    monkeypatch.setattr(job, "atomic_path", spy_atomic)
    hp = hparams("lp", epochs=2)
    result, out, ckpt = run_job(hp, cxr_store, tmp_path, "job")

    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "hparams.json", "metrics.json", "predictions.parquet"]
    assert written[-1] == "metrics.json" and set(written) == {"history.csv", "hparams.json", "metrics.json"}
    assert not ckpt.exists()  # removed once the results are complete

    metrics = json.loads((out / "metrics.json").read_text())
    assert json.dumps(metrics, sort_keys=True) == json.dumps(result, sort_keys=True)
    assert set(metrics["test"]) == {"map", "auroc", "macro_f1"} and metrics["primary_metric"] == "map"
    assert set(metrics["per_class"]["test"]) == {"cardiomegaly", "effusion", "nodule", "opacity"}
    assert metrics["epochs_run"] == 2 and metrics["strategy"] == "lp"
    hparams_file = json.loads((out / "hparams.json").read_text())
    assert hparams_file["signature"] == job.signature(hp) and hparams_file["strategy"]["type"] == "lp"
    hist = pd.read_csv(out / "history.csv")
    assert hist["epoch"].tolist() == [0, 1] and {"train_loss", "val_map", "trainable_params"} <= set(hist.columns)


def test_a_failing_job_leaves_no_metrics_and_keeps_its_checkpoint(cxr_store, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("test split unreadable")

    monkeypatch.setattr(job, "predict", broken)
    with pytest.raises(RuntimeError, match="test split unreadable"):
        run_job(hparams("ft", epochs=1), cxr_store, tmp_path, "job")
    assert not (tmp_path / "job" / "out" / "metrics.json").exists()
    assert (tmp_path / "job" / "resume.ckpt").exists()


# -- early stopping and the frozen blocks' BatchNorm mode, through fit() --------------------------------------
def _scripted_scores(monkeypatch, scores):
    """Validation returns ``scores`` epoch after epoch (the monitored metric), whatever the network does."""
    it = iter(scores)

    def evaluate_epoch(self, epoch):
        value = next(it)
        return {self.s.monitor: value}, None

    monkeypatch.setattr(Trainer, "evaluate_epoch", evaluate_epoch)
    monkeypatch.setattr("medtl.metrics.per_class_auroc", lambda y, p: [])


@pytest.mark.parametrize("patience, expected_epochs", [(5, 7), (2, 4), (1, 3), (0, 12)])
def test_patience_counts_epochs_without_gain(patience, expected_epochs, monkeypatch, make_net, make_context,
                                             tiny_store):
    """patience 5 stops after the 5th epoch in a row without a gain (the authors' EarlyStopping:
    num_bad_epochs >= patience), not the 6th; 0 never stops. Best epoch: the last gain."""
    from conftest import trainer_for
    from medtl.strategies import STRATEGIES

    _scripted_scores(monkeypatch, [0.5, 0.6] + [0.55] * 10)
    strategy = STRATEGIES.get("ft")(make_context(make_net("vgg_tiny"), tiny_store))
    outcome = trainer_for(strategy, tiny_store, epochs=12, patience=patience, monitor="accuracy").fit()
    assert outcome.epochs_run == expected_epochs
    assert outcome.best_epoch == 1


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_frozen_bn_setting_through_fit(mode, make_net, tiny_store):
    """training.frozen_bn: the BatchNorm statistics of blocks that G-LF keeps frozen stay fixed (eval) or
    follow the data (train, as the authors' trainer calls model.train()); their weights never train."""
    from conftest import context_for, trainer_for
    from medtl.strategies import STRATEGIES

    net = make_net("resnet_tiny")
    ctx = context_for(net, tiny_store)
    ctx.frozen_bn = mode
    strategy = STRATEGIES.get("g_lf")(ctx, unfreeze_every=10)  # head only in these 2 epochs
    stem = net.block_prefixes[0]
    stats = {n: b.clone() for n, b in net.net.named_buffers()
             if any(n.startswith(p + ".") for p in stem) and "running_mean" in n}
    weights = {n: p.detach().clone() for n, p in net.net.named_parameters() if net.block_of(n) == 0}
    assert stats and weights
    trainer_for(strategy, tiny_store, epochs=2).fit()
    moved = [n for n, b in net.net.named_buffers() if n in stats and not torch.equal(b, stats[n])]
    assert bool(moved) == (mode == "train")
    assert all(torch.equal(p, weights[n]) for n, p in net.net.named_parameters() if n in weights)


def test_cached_features_only_with_frozen_bn_eval(make_net):
    from conftest import context_for
    from medtl.strategies import STRATEGIES
    from medtl.strategies import uses_frozen_features

    lp = STRATEGIES.get("lp")
    assert uses_frozen_features(lp, {}, "eval") and not uses_frozen_features(lp, {}, "train")
    ctx = context_for(make_net("resnet_tiny"))
    ctx.frozen_bn = "train"
    strategy = lp(ctx)
    assert strategy.backbone_frozen(0) and not strategy.backbone_unchanged(0)
    assert not uses_frozen_features(strategy)


@pytest.mark.parametrize("strategy,settings,stages", [
    ("spft", {"head_epochs": 1, "top_k": 2}, ["stage1 head", "stage2 head+1", "stage2 head+2"]),
    ("lp_ft", {"lp_epochs": 1}, ["lp (head)", "ft (all)", "ft (all)"]),
    ("g_lf", {}, ["head", "head+1", "head+2"]),
])
def test_one_log_line_per_epoch_a_person_can_follow(strategy, settings, stages, make_net, tiny_store, capsys):
    """Epoch, stage, trainable blocks, loss, validation metric, seconds: in the log and in history.csv."""
    import re

    from conftest import context_for, trainer_for
    from medtl.strategies import STRATEGIES

    net = make_net("resnet_tiny")
    s = STRATEGIES.get(strategy)(context_for(net, tiny_store, epochs=3), **settings)
    outcome = trainer_for(s, tiny_store, epochs=3, monitor="accuracy").fit()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[train] epoch ")]
    assert len(lines) == 3
    pattern = (r"\[train\] epoch (\d)/3 \| stage (.+) \| trainable blocks (\d)/6 \([\d,]+ parameters\) \| "
               r"loss \d+\.\d{4} \| val accuracy \d\.\d{4} \(best \d\.\d{4} at epoch \d\) \| \d+\.\d s")
    parsed = [re.fullmatch(pattern, line) for line in lines]
    assert all(parsed), lines
    assert [m.group(2) for m in parsed] == stages == [h["stage"] for h in outcome.history]
    assert [int(m.group(3)) for m in parsed] == [h["trainable_blocks"] for h in outcome.history]


def test_checkpoint_of_an_older_layout_starts_over(cxr_store, tmp_path, capfd):
    """A checkpoint with this job's signature but written before the shared fit loop (no learner state)
    is not resumed: the job starts over and ends as an uninterrupted run."""
    hp = hparams("ft", epochs=2)
    reference, _, _ = run_job(hp, cxr_store, tmp_path, "reference")
    ckpt = tmp_path / "old" / "resume.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"signature": job.signature(hp), "epoch": 0, "net": {}, "optimizer": {}}, ckpt)
    capfd.readouterr()
    result, _, _ = run_job(hp, cxr_store, tmp_path, "old")
    assert "has an older layout; starting over" in capfd.readouterr().err
    assert comparable(result) == comparable(reference)


@pytest.mark.parametrize("strategy", ["ft", "auto_rgn"])
def test_a_last_batch_of_one_image_joins_the_one_before(strategy, make_net, tiny_store):
    """30 training images in batches of 29: BatchNorm cannot train on the single image left over (the job
    crashed); it joins the batch before, for the epoch (one step) and for Auto-RGN's probe batches."""
    from conftest import context_for, trainer_for
    from medtl.strategies import STRATEGIES

    net = make_net("resnet_tiny")
    strategy = STRATEGIES.get(strategy)(context_for(net, tiny_store))
    trainer = trainer_for(strategy, tiny_store, epochs=1, batch_size=29)
    steps = []
    trainer.strategy.after_step = lambda: steps.append(1)
    trainer.fit()
    assert len(steps) == 1 == trainer.train.n_batches(29, training=True)
    assert trainer.train.n_batches(29) == 2  # evaluation keeps its batches (no BatchNorm update there)
