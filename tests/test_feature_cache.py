"""Frozen computation done once, and every other fast path, against the plain path it replaces.

- Cached backbone features (the ``extract_features`` rule): LP and LP-FT train on them and give the
  same selected epoch and the same metrics (within 1e-4) as running the frozen backbone every epoch,
  for each architecture family, also after a kill and resume; features are checked when loaded.
- While the backbone is frozen everything before the head is in eval mode (VGG's classifier dropout).
- Batches: the one-copy gather, the prefetching thread and the normaliser give the same tensors.
- The study DAG: every piece of shared work (dataset fetch and preparation, weights, features)
  is one job that the jobs needing it share.
"""
from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_tiny_store
from medtl.models import build_network
from medtl.strategies import STRATEGIES
from medtl.training import features as F
from medtl.training import job
from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, SplitData
from medtl.training.trainer import Trainer
from workflow_helpers import REPO, snakemake, write_config

ARCHS = ["resnet_tiny", "densenet_tiny", "vgg_tiny"]
WEIGHTS = {"type": "checkpoint", "path": "pretrained.pt"}


# -- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """A 5-class store of 100 RGB images (60 train / 20 val / 20 test)."""
    root = tmp_path_factory.mktemp("fc_store") / "store"
    write_tiny_store(root, task="multiclass", n=100, n_classes=5)
    return str(root)


@pytest.fixture(scope="module")
def cached(store_dir, tmp_path_factory):
    """arch -> (pretrained backbone file, cached features .npy), made as the workflow makes them."""
    base = tmp_path_factory.mktemp("fc_features")
    out = {}
    for arch in ARCHS:
        torch.manual_seed(123)  # "pretrained": any fixed backbone other than the job's own initialisation
        weights = base / f"{arch}.pt"
        torch.save(build_network(arch, 5).backbone_state(), weights)
        npy = base / arch / "checkpoint.npy"
        F.extract(F.describe(arch, WEIGHTS, None), store_dir, str(weights), str(npy), str(F.meta_path(npy)),
                  device="cpu", batch_size=32)
        out[arch] = (str(weights), str(npy))
    return out


def hparams(arch, strategy, settings=None, epochs=5, lr=3e-3, seed=0, patience=None):
    return {
        "dataset": {"name": "tiny", "metrics": None, "primary_metric": None},
        "arch": {"name": arch, "weights": WEIGHTS, "preprocess": {"resize": 32, "crop": 32}},
        "strategy": {"name": strategy, "type": strategy, "settings": settings or {}},
        "training": {"epochs": epochs, "batch_size": 16, "patience": epochs if patience is None else patience,
                     "device": "cpu", "optimizer": "adam", "eval_batch_size": 64},
        "lr": lr, "seed": seed,
    }


def run(hp, store_dir, weights, tmp_path, name, features=None):
    out, ckpt = tmp_path / name / "out", tmp_path / name / "resume.ckpt"
    result = job.run(copy.deepcopy(hp), store_dir, weights, str(out), str(ckpt), features_file=features)
    return result, pd.read_csv(out / "history.csv").drop(columns="seconds")


def assert_same_results(a: dict, b: dict, hist_a: pd.DataFrame, hist_b: pd.DataFrame, tol=1e-4):
    assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"]
    for split in ("val", "test"):
        assert a[split].keys() == b[split].keys()
        for k in a[split]:
            if a[split][k] is None or math.isnan(a[split][k]):  # undefined (None in metrics.json): on both
                assert b[split][k] is None or math.isnan(b[split][k]), (split, k)
            else:
                assert b[split][k] == pytest.approx(a[split][k], abs=tol), (split, k)
    assert list(hist_a.columns) == list(hist_b.columns)
    assert list(hist_a["stage"]) == list(hist_b["stage"])  # the one column of words
    numbers = [c for c in hist_a.columns if c != "stage"]
    np.testing.assert_allclose(hist_a[numbers].to_numpy(float), hist_b[numbers].to_numpy(float), atol=tol, rtol=0)


# -- cached = uncached -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy,settings", [("lp", {}), ("lp_ft", {"lp_epochs": 2})])
def test_cached_features_give_the_uncached_results(arch, strategy, settings, store_dir, cached, tmp_path):
    weights, npy = cached[arch]
    hp = hparams(arch, strategy, settings, epochs=4)
    plain, hist_plain = run(hp, store_dir, weights, tmp_path, "plain")
    fast, hist_fast = run(hp, store_dir, weights, tmp_path, "cached", features=npy)
    assert_same_results(plain, fast, hist_plain, hist_fast)
    hp_file = json.loads((tmp_path / "cached" / "out" / "hparams.json").read_text())
    assert hp_file["cached_features"] == npy  # the fast path was taken
    assert json.loads((tmp_path / "plain" / "out" / "hparams.json").read_text())["cached_features"] is None


def test_early_stopping_selects_the_same_epoch(store_dir, cached, tmp_path):
    weights, npy = cached["resnet_tiny"]
    hp = hparams("resnet_tiny", "lp", epochs=12, lr=0.05, patience=1)
    plain, hist_plain = run(hp, store_dir, weights, tmp_path, "plain")
    fast, hist_fast = run(hp, store_dir, weights, tmp_path, "cached", features=npy)
    assert plain["epochs_run"] < 12  # it did stop early
    assert_same_results(plain, fast, hist_plain, hist_fast)


def test_a_job_given_features_its_strategy_does_not_use_stops(store_dir, cached, tmp_path):
    """The planner and the job read the same declaration (frozen_backbone_when): features given to a strategy
    without frozen-backbone epochs are a disagreement between them, named, not silently ignored."""
    weights, npy = cached["resnet_tiny"]
    hp = hparams("resnet_tiny", "ft", epochs=1)
    with pytest.raises(RuntimeError, match="'ft' has no epochs on a frozen backbone.*disagree"):
        run(hp, store_dir, weights, tmp_path, "ft", features=npy)
    assert not (tmp_path / "ft" / "out" / "metrics.json").exists()
    assert {name for name in STRATEGIES.names() if F.uses_frozen_features(STRATEGIES.get(name))} == {"lp", "lp_ft", "knn"}
    assert not F.uses_frozen_features(STRATEGIES.get("lp_ft"), {"lp_epochs": 0})  # no LP stage: no features job
    assert F.uses_frozen_features(STRATEGIES.get("lp_ft"), {})


# -- kill and resume on the cached path ----------------------------------------------------------------------
class Killed(Exception):
    pass


@pytest.mark.parametrize("strategy,settings,die_at", [
    ("lp", {}, 2),
    ("lp_ft", {"lp_epochs": 2}, 1),   # killed in the LP stage, resumed through the switch to FT
    ("lp_ft", {"lp_epochs": 2}, 3),   # killed after the switch
])
def test_kill_and_resume_on_cached_features(strategy, settings, die_at, store_dir, cached, tmp_path, monkeypatch):
    weights, npy = cached["vgg_tiny"]
    hp = hparams("vgg_tiny", strategy, settings, epochs=4)
    reference, hist_ref = run(hp, store_dir, weights, tmp_path, "reference", features=npy)

    original = Trainer.run_epoch

    def dying(self, epoch, optimizer, scheduler):
        if epoch == die_at:
            raise Killed
        return original(self, epoch, optimizer, scheduler)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "run_epoch", dying)
        with pytest.raises(Killed):
            run(hp, store_dir, weights, tmp_path, "killed", features=npy)
    state = torch.load(tmp_path / "killed" / "resume.ckpt", weights_only=False)
    assert state["epoch"] == die_at - 1
    if die_at <= settings.get("lp_epochs", 99):  # still LP: the checkpoint holds the head, not the backbone
        learner = state["learner"]  # what the classification trainer keeps in the fit loop's checkpoint
        assert learner["pristine"] and set(learner["net"]) == {"net.classifier.6.weight", "net.classifier.6.bias"}
    resumed, hist = run(hp, store_dir, weights, tmp_path, "killed", features=npy)
    assert json.dumps({k: v for k, v in resumed.items() if k not in job.MACHINE_DEPENDENT}, sort_keys=True) == \
        json.dumps({k: v for k, v in reference.items() if k not in job.MACHINE_DEPENDENT}, sort_keys=True)
    pd.testing.assert_frame_equal(hist, hist_ref)


def test_lp_ft_best_epoch_in_the_lp_stage_restores_the_pretrained_backbone(store_dir, cached, tmp_path, monkeypatch):
    """The best weights of an LP epoch still hold the pretrained backbone after FT epochs trained it."""
    weights, npy = cached["resnet_tiny"]
    hp = hparams("resnet_tiny", "lp_ft", {"lp_epochs": 2}, epochs=4, lr=0.5)  # FT at this rate ruins the net
    seen = {}
    original = Trainer.fit

    def fit(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen["net"] = {k: v.clone() for k, v in self.net.state_dict().items()}
        return out

    monkeypatch.setattr(Trainer, "fit", fit)
    result, _ = run(hp, store_dir, weights, tmp_path, "job", features=npy)
    assert result["best_epoch"] < 2, "pick settings where an LP epoch wins"
    pretrained = torch.load(weights, weights_only=True)
    for k, v in pretrained.items():
        assert torch.equal(seen["net"]["net." + k], v), k


def test_a_checkpoint_that_cannot_be_written_is_an_error(make_net, make_context, make_trainer, tiny_store, tmp_path):
    """Checkpoints are written in the background; a failure still stops the job, naming the file."""
    (tmp_path / "file").write_text("not a folder")
    strategy = STRATEGIES.get("ft")(make_context(make_net("resnet_tiny"), tiny_store))
    trainer = make_trainer(strategy, tiny_store, epochs=2, checkpoint=tmp_path / "file" / "resume.ckpt")
    with pytest.raises(RuntimeError, match="writing checkpoint .*resume.ckpt failed"):
        trainer.fit()


def test_checkpoint_interval_keeps_the_first_and_last_epochs(make_net, make_context, make_trainer, tiny_store,
                                                             tmp_path, monkeypatch):
    """On a GPU checkpoints are throttled (a fast epoch must not wait for a large write)."""
    from medtl.fit import FitLoop

    saved = []
    original = FitLoop._save

    def spy(self, epoch, *args):
        saved.append(epoch)
        return original(self, epoch, *args)

    monkeypatch.setattr(FitLoop, "_save", spy)
    strategy = STRATEGIES.get("ft")(make_context(make_net("resnet_tiny"), tiny_store))
    trainer = make_trainer(strategy, tiny_store, epochs=4, checkpoint=tmp_path / "resume.ckpt")
    trainer.s.checkpoint_interval_s = 3600
    trainer.fit()
    assert saved == [0, 3]
    assert torch.load(tmp_path / "resume.ckpt", weights_only=False)["epoch"] == 3


# -- what LP means for the network's modes ------------------------------------------------------------------------
def test_frozen_backbone_epochs_put_everything_but_the_head_in_eval_mode(make_net, make_context):
    net = make_net("vgg_tiny", n_classes=3)
    strategy = STRATEGIES.get("lp_ft")(make_context(net), lp_epochs=1)
    dropout = [m for m in net.net.classifier if isinstance(m, torch.nn.Dropout)]
    strategy.on_epoch_start(0, None, None)
    strategy.set_train_mode()
    assert not any(m.training for m in dropout) and net.head_module().training
    strategy.on_epoch_start(1, None, None)  # full fine-tuning: dropout trains again
    strategy.set_train_mode()
    assert all(m.training for m in dropout)


# -- the features files ---------------------------------------------------------------------------------------
def test_features_are_the_heads_input(store_dir, cached):
    from medtl.data.store import load_store

    store = load_store(store_dir)
    weights, npy = cached["vgg_tiny"]
    rows = F.load_rows(npy, len(store.images))
    net = build_network("vgg_tiny", 5)
    job.load_weights(net, weights)
    net.eval()
    x = Normalizer(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))(torch.from_numpy(np.array(store.images[:7])))
    captured = []
    net.head_module().register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    net(x)
    assert rows.dtype == np.float32 and rows.shape == (100, 64)
    torch.testing.assert_close(torch.from_numpy(np.array(rows[:7])), captured[0], atol=1e-5, rtol=1e-5)
    meta = json.loads(F.meta_path(npy).read_text())
    assert meta["rows"] == 100 and meta["dim"] == 64 and meta["arch"] == "vgg_tiny"


def test_features_of_other_settings_or_another_store_are_refused(store_dir, cached, tmp_path):
    from medtl.data.store import load_store

    store = load_store(store_dir)
    _, npy = cached["resnet_tiny"]
    expect = F.describe("resnet_tiny", WEIGHTS, None)
    F.CachedFeatures.load(npy, store, expect, torch.device("cpu"))  # the right ones load
    with pytest.raises(ValueError, match="other .*mean"):
        F.CachedFeatures.load(npy, store, F.describe("resnet_tiny", WEIGHTS, {"mean": [0.5] * 3, "std": [0.5] * 3}),
                              torch.device("cpu"))
    with pytest.raises(ValueError, match="other .*arch"):
        F.CachedFeatures.load(npy, store, F.describe("densenet_tiny", WEIGHTS, None), torch.device("cpu"))
    other = write_tiny_store(tmp_path / "other", n=60, n_classes=5)
    with pytest.raises(ValueError, match="60 images"):
        F.CachedFeatures.load(npy, other, expect, torch.device("cpu"))


def test_cache_rows_is_generic_and_atomic(tmp_path):
    """The API another frozen encoder (e.g. SAM's) can reuse: any row shape, written atomically."""
    calls = []

    def compute(start, stop):
        calls.append((start, stop))
        return torch.arange(start, stop, dtype=torch.float32).view(-1, 1, 1).expand(-1, 2, 3)

    rows = F.cache_rows(tmp_path / "emb.npy", 10, compute, batch_size=4)
    assert calls == [(0, 4), (4, 8), (8, 10)] and rows.shape == (10, 2, 3)
    assert np.array_equal(rows[:, 1, 2], np.arange(10))

    def broken(start, stop):
        if start:
            raise RuntimeError("killed")
        return np.zeros((stop - start, 3))

    with pytest.raises(RuntimeError):
        F.cache_rows(tmp_path / "broken.npy", 10, broken, batch_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy"]  # no partial file left, none named as done


# -- batches --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_batches_and_normalisation_are_the_plain_ones(channels, make_store):
    store = make_store(n=45, channels=channels)
    idx, targets = store.indices("train"), store.targets("train")
    order = np.random.default_rng(0).permutation(len(idx))
    plain = SplitData(store.images, idx, targets, prefetch=False)
    fetched = SplitData(store.images, idx, targets, prefetch=True)
    pairs = list(zip(plain.iterate(8, order), fetched.iterate(8, order), strict=True))
    assert len(pairs) == plain.n_batches(8)
    for (xa, ya), (xb, yb) in pairs:
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # the gathered rows are the store's rows, in ascending order within the batch
    x, y = plain.batch(order[:8])
    rows = idx[np.sort(order[:8])]
    assert np.array_equal(x.numpy(), store.images[rows]) and torch.equal(y, torch.as_tensor(targets[np.sort(order[:8])]))
    # the normaliser against the textbook formula, both memory formats
    reference = (x.permute(0, 3, 1, 2).float() / 255).expand(-1, 3, -1, -1)
    reference = (reference - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for channels_last in (False, True):
        out = Normalizer(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), channels_last=channels_last)(x)
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
        assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert np.array_equal(x.numpy(), store.images[rows])  # the batch itself is left as it was


def test_prefetching_stops_cleanly_and_passes_errors_on(make_store):
    store = make_store(n=40)
    data = SplitData(store.images, store.indices("train"), store.targets("train"), prefetch=True)
    for _ in data.iterate(4):
        break  # abandoning the iterator must not leave the thread blocked
    broken = SplitData(np.zeros((2, 2, 2, 3), np.uint8), np.array([0, 1, 5]), np.zeros((3, 1)), prefetch=True)
    broken.images = None
    with pytest.raises(Exception):
        list(broken.iterate(1))


# -- the study's DAG: shared work is done once -----------------------------------------------------------------------
def dry_run_jobs(tmp_path, configfile):
    """(rule, wildcards, inputs) of every job of a dry run."""
    proc = snakemake(tmp_path, configfile, "-n")
    jobs = []
    for line in (proc.stdout + proc.stderr).splitlines():
        rule = re.match(r"^(?:local)?rule (\w+):", line)
        if rule:
            jobs.append({"rule": rule.group(1), "wildcards": "", "input": []})
        elif jobs and (m := re.match(r"^\s+input: (.*)$", line)):
            jobs[-1]["input"] = m.group(1).split(", ")
        elif jobs and (m := re.match(r"^\s+wildcards: (.*)$", line)):
            jobs[-1]["wildcards"] = m.group(1)
    return jobs


def test_paper_dag_runs_shared_work_once(tmp_path):
    """The first study's DAG with the frozen blocks in eval mode (``training.frozen_bn: eval``): one features
    file per (dataset, architecture), shared by LP and LP-FT. configs/paper.yaml itself keeps BatchNorm in
    train mode as the authors' code does, where features are not exact and no job uses them."""
    import yaml

    config = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    assert config["training"]["frozen_bn"] == "train"
    (tmp_path / "as_published").mkdir()
    (tmp_path / "eval_bn").mkdir()
    jobs = dry_run_jobs(tmp_path / "as_published", REPO / "configs" / "paper.yaml")
    assert not [j for j in jobs if j["rule"] == "extract_features"]
    assert not [f for j in jobs if j["rule"] == "train" for f in j["input"] if "/features/" in f]

    config["training"]["frozen_bn"] = "eval"
    configfile = tmp_path / "paper_eval_bn.yaml"
    configfile.write_text(yaml.safe_dump(config))
    jobs = dry_run_jobs(tmp_path / "eval_bn", configfile)
    by_rule: dict[str, list] = {}
    for j in jobs:
        by_rule.setdefault(j["rule"], []).append(j)
    n_datasets, n_archs = 8, 3
    expected = {"fetch_dataset": n_datasets, "fetch_weights": n_archs,
                "prepare_dataset": n_datasets * 2,  # ResNet-50 at 232 px; DenseNet-121 and VGG-19 share 256 px
                "extract_features": n_datasets * n_archs}
    for rule, count in expected.items():
        wildcards = [j["wildcards"] for j in by_rule[rule]]
        assert len(wildcards) == count and len(set(wildcards)) == count, rule
    trains = by_rule["train"]
    assert len(trains) == 1728
    for j in trains:
        feats = [f for f in j["input"] if "/features/" in f]
        strategy = re.search(r"strategy=(\w+)", j["wildcards"]).group(1)
        if strategy in ("lp", "lp_ft"):
            dataset, arch = re.search(r"dataset=(\w+), arch=(\w+)", j["wildcards"]).groups()
            assert sorted(feats) == [f"results/paper/features/{dataset}/{arch}/imagenet.{e}" for e in ("json", "npy")]
        else:
            assert not feats, j
    # every features file is an input of 2 strategies x 3 learning rates x 3 seeds = 18 jobs
    users: dict[str, int] = {}
    for j in trains:
        for f in j["input"]:
            if f.endswith(".npy") and "/features/" in f:
                users[f] = users.get(f, 0) + 1
    assert len(users) == 24 and set(users.values()) == {18}


def test_no_features_for_random_weights(tmp_path):
    """With weights 'none' the backbone is drawn per seed: nothing to share, no features job."""
    config = {"results": "results", "seeds": [0, 1], "learning_rates": [0.001],
              "datasets": {"synth_derm": {"options": {"n": 60, "size": 36}}},
              "architectures": {"vgg_tiny": {"weights": {"type": "none"}}},
              "strategies": {"ft": {}, "lp": {}}, "training": {"epochs": 1}}
    jobs = dry_run_jobs(tmp_path, write_config(tmp_path / "config.yaml", config))
    assert not [j for j in jobs if j["rule"] == "extract_features"]
    assert sum(j["rule"] == "train" for j in jobs) == 4


@pytest.mark.slow
def test_workflow_caches_features_once_and_lp_matches_the_uncached_job(tmp_path):
    """The real rules: one features job for LP and LP-FT, and their results equal an uncached run's."""
    torch.manual_seed(7)
    ckpt = tmp_path / "pretrained.pt"
    torch.save(build_network("vgg_tiny", 3).net.state_dict(), ckpt)
    config = {"results": "results", "seeds": [0], "learning_rates": [0.003],
              "datasets": {"synth_derm": {"options": {"n": 60, "size": 36}}},
              "architectures": {"vgg_tiny": {"weights": {"type": "checkpoint", "path": str(ckpt)}}},
              "strategies": {"ft": {}, "lp": {}, "lp_ft": {"lp_epochs": 1}},
              "training": {"epochs": 3, "batch_size": 16, "patience": 3}}
    cfg = write_config(tmp_path / "config.yaml", config)
    proc = snakemake(tmp_path, cfg, "--forceall", "--quiet", "rules", "-n")
    assert re.search(r"extract_features\s+1\b", proc.stdout + proc.stderr)
    snakemake(tmp_path, cfg, "results/runs/synth_derm/vgg_tiny/lp/lr0.003/seed0/metrics.json",
              "results/runs/synth_derm/vgg_tiny/lp_ft/lr0.003/seed0/metrics.json")
    features = tmp_path / "results/features/synth_derm/vgg_tiny/checkpoint.npy"
    assert features.exists()
    for strategy in ("lp", "lp_ft"):
        run_dir = tmp_path / f"results/runs/synth_derm/vgg_tiny/{strategy}/lr0.003/seed0"
        hp = json.loads((run_dir / "hparams.json").read_text())
        assert hp["cached_features"] == "results/features/synth_derm/vgg_tiny/checkpoint.npy"
        cached = json.loads((run_dir / "metrics.json").read_text())
        plain_hp = {k: hp[k] for k in ("dataset", "arch", "strategy", "training", "lr", "seed")}
        store = tmp_path / "results/prepared/synth_derm/r36_c32"
        plain, hist = run(plain_hp, str(store), str(tmp_path / "results/weights/vgg_tiny/checkpoint.pt"),
                          tmp_path, f"plain_{strategy}")
        assert_same_results(plain, cached, hist, pd.read_csv(run_dir / "history.csv").drop(columns="seconds"))
