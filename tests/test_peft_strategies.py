"""Issue 21: LoRA, DoRA, BitFit, layer-wise rate decay and the k-NN probe, each checked for the property that
defines it through Trainer.fit (or the job, for knn) from a real job's start (``medtl.training.job.build`` with a
pretrained backbone file, as the pipeline's weights rules write it, and a new head); and the cost every job
records beside its scores (metrics.json, the report's cost table)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import context_for, trainer_for, write_tiny_store
from medtl.models import build_network
from medtl.models.weights import save_backbone
from medtl.strategies import STRATEGIES, uses_frozen_features
from medtl.training import features as F
from medtl.training import job
from medtl.training.batches import IMAGENET_MEAN, IMAGENET_STD, Normalizer, SplitData
from medtl.training.predictions import read_predictions
from medtl.training.trainer import Trainer

NEW = ["lora", "dora", "bitfit", "llrd", "knn"]
WEIGHTS = {"type": "checkpoint", "path": "pretrained.pt"}


# -- a real job's start ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """arch -> a pretrained backbone file: the architecture trained on a source task (FT, 2 epochs) and saved as
    the pipeline's weights rules save it (``Network.backbone_state``)."""
    root = tmp_path_factory.mktemp("peft_weights")
    source = write_tiny_store(root / "source", task="multiclass", n=50, n_classes=4, seed=7)
    files = {}

    def get(arch: str) -> str:
        if arch not in files:
            torch.manual_seed(0)
            net = build_network(arch, 4)
            strategy = STRATEGIES.get("ft")(context_for(net, source, lr=3e-3))
            trainer = trainer_for(strategy, source)
            optimizer = strategy.build_optimizer()
            for epoch in range(2):
                trainer.run_epoch(epoch, optimizer, None)
            files[arch] = str(root / f"{arch}.pt")
            save_backbone(net.backbone_state(), files[arch])
        return files[arch]

    return get


def hparams(arch, strategy, settings=None, epochs=2, lr=1e-2, seed=0, patience=None):
    return {
        "dataset": {"name": "tiny", "metrics": None, "primary_metric": None},
        "arch": {"name": arch, "weights": WEIGHTS, "preprocess": {"resize": 32, "crop": 32}},
        "strategy": {"name": strategy, "type": strategy, "settings": settings or {}},
        "training": {"epochs": epochs, "batch_size": 8, "patience": epochs if patience is None else patience,
                     "device": "cpu", "optimizer": "adam", "eval_batch_size": 64},
        "lr": lr, "seed": seed,
    }


def start(arch, name, store, pretrained, lr=1e-2, **settings):
    """(network, strategy) exactly as a job builds them (job.build): seeded, the pretrained backbone loaded,
    the strategy applied to it."""
    net, strategy, *_ = job.build(hparams(arch, name, settings, lr=lr), store, pretrained(arch), torch.device("cpu"))
    return net, strategy


class Killed(Exception):
    """Stands in for the job being killed in the middle of an epoch."""


def params_of(net) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.net.named_parameters()}


def buffers_of(net) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in net.net.named_buffers()}


def changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def head_names(net) -> set[str]:
    return {n for n, _, is_head, _ in net.named_block_parameters() if is_head}


def trainable(net) -> set[str]:
    return {n for n, p in net.net.named_parameters() if p.requires_grad}


def batch(store, split="val"):
    norm = Normalizer(IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
    idx = store.indices(split)
    return norm(torch.from_numpy(np.ascontiguousarray(store.images[idx])))


# -- LoRA and DoRA ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lora", "dora"])
@pytest.mark.parametrize("arch", ["vit_tiny", "resnet_tiny", "vgg_tiny"])
def test_adapters_and_head_train_alone(name, arch, tiny_store, pretrained):
    """Through fit: only the adapters and the new head change; every pretrained weight and BatchNorm statistic
    stays bit-identical. On the ViT the adapters sit on each layer's fused qkv; on a CNN on every convolution and
    linear layer outside the head (VGG's pretrained fully connected layers, the head's input, too)."""
    net, strategy = start(arch, name, tiny_store, pretrained)
    adapters = {n for n, _ in net.net.named_parameters() if ".lora_" in n}
    head = head_names(net)
    before_p, before_b = params_of(net), buffers_of(net)
    outcome = trainer_for(strategy, tiny_store, epochs=2).fit()
    after_p, after_b = params_of(net), buffers_of(net)

    moved = changed(before_p, after_p)
    assert moved - adapters - head == set(), f"pretrained weights that moved: {sorted(moved - adapters - head)[:5]}"
    assert changed(before_b, after_b) == set(), "BatchNorm statistics moved"
    assert head <= moved and {n for n in adapters if ".lora_B." in n} <= moved  # B starts at 0: it trained
    assert trainable(net) == adapters | head
    params = dict(net.net.named_parameters())
    assert outcome.history[-1]["trainable_params"] == sum(params[n].numel() for n in adapters | head)
    if arch == "vit_tiny":
        assert strategy.adapted_modules == [f"blocks.{i}.attn.qkv" for i in range(4)]
    else:
        fresh = build_network(arch, 3)
        layers = {n for n, m in fresh.net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                  and not fresh.is_head(n)}
        assert set(strategy.adapted_modules) == layers
    if name == "dora":
        assert any(".lora_magnitude_vector." in n for n in adapters)
    # the pretrained weights under their adapted names are the weights file's
    state = torch.load(pretrained(arch), weights_only=True)
    for module in strategy.adapted_modules:
        assert torch.equal(after_p[f"{module}.base_layer.weight"], state[f"{module}.weight"])


@pytest.mark.parametrize("name", ["lora", "dora"])
@pytest.mark.parametrize("arch", ["vit_tiny", "resnet_tiny"])
def test_the_merged_model_is_the_adapted_one(name, arch, tiny_store, pretrained):
    """After training, the adapters merged into the weights give the adapted model's outputs, under the model's own
    parameter names: the merged state loads into a network built afresh (Network.backbone_state too)."""
    net, strategy = start(arch, name, tiny_store, pretrained)
    trainer_for(strategy, tiny_store, epochs=2).fit()
    merged = strategy.merged().eval()
    net.eval()
    x = batch(tiny_store)
    with torch.no_grad():
        adapted, plain = net(x), merged(x)
    torch.testing.assert_close(plain, adapted, rtol=1e-4, atol=1e-5)
    module = strategy.adapted_modules[-1]
    assert not torch.equal(merged.net.get_submodule(module).weight,
                           net.net.get_submodule(module).base_layer.weight)
    state = merged.net.state_dict()
    assert not any(".lora_" in k or "base_layer" in k for k in state)
    fresh = build_network(arch, 3)
    fresh.net.load_state_dict(state)  # strict: the model's own names, nothing more
    fresh.load_backbone(net.backbone_state())  # the adapted network's backbone, merged
    assert all(torch.equal(v, fresh.net.state_dict()[k]) for k, v in state.items() if not net.is_head(k))


def test_adapter_blocks_and_targets(tiny_store, pretrained):
    _, top = start("vit_tiny", "lora", tiny_store, pretrained, blocks=1)
    assert top.adapted_modules == ["blocks.3.attn.qkv"]  # the head's block has no qkv; the top layer has
    _, mlp = start("vit_tiny", "lora", tiny_store, pretrained, targets=["qkv", "mlp.fc2"], blocks=2)
    assert mlp.adapted_modules == ["blocks.2.attn.qkv", "blocks.2.mlp.fc2", "blocks.3.attn.qkv", "blocks.3.mlp.fc2"]
    with pytest.raises(ValueError, match="q_proj"):
        start("vit_tiny", "lora", tiny_store, pretrained, targets=["q_proj"])
    _, stage = start("resnet_tiny", "lora", tiny_store, pretrained, blocks=1)
    assert stage.adapted_modules and all(m.startswith("layer4.") for m in stage.adapted_modules)


def test_lora_job_resumes_and_evaluates_the_adapted_model(tiny_store, pretrained, tmp_path, monkeypatch):
    """A LoRA job killed after an epoch resumes from its checkpoint (adapters in its state) to the uninterrupted
    run's results; its test predictions are those of the adapted model with the best epoch's weights."""
    store_dir, weights = str(tiny_store.root), pretrained("vit_tiny")
    hp = hparams("vit_tiny", "lora", {"rank": 4}, epochs=3, lr=3e-3)
    built = []
    original_build = job.build

    def spy_build(*args, **kwargs):
        built.append(original_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(job, "build", spy_build)
    reference = job.run(copy.deepcopy(hp), store_dir, weights, str(tmp_path / "ref"), str(tmp_path / "ref.ckpt"))
    net, strategy = built[-1][0], built[-1][1]
    merged = strategy.merged().eval()
    with torch.no_grad():
        probs = torch.softmax(merged(batch(tiny_store, "test")), dim=1).numpy()
    test = read_predictions(tmp_path / "ref" / "predictions.parquet")
    np.testing.assert_allclose(test.scores(test.split("test")), probs, atol=1e-5)
    history = pd.read_csv(tmp_path / "ref" / "history.csv")
    primary = reference["primary_metric"]
    assert reference["val"][primary] == pytest.approx(history[f"val_{primary}"][reference["best_epoch"]], abs=1e-9)

    original = Trainer.run_epoch

    def dying(self, epoch, optimizer, scheduler):
        if epoch == 2:
            raise Killed
        return original(self, epoch, optimizer, scheduler)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "run_epoch", dying)
        with pytest.raises(Killed):
            job.run(copy.deepcopy(hp), store_dir, weights, str(tmp_path / "k"), str(tmp_path / "k.ckpt"))
    saved = torch.load(tmp_path / "k.ckpt", weights_only=False)
    assert saved["epoch"] == 1 and any(".lora_A." in k for k in saved["learner"]["net"])
    resumed = job.run(copy.deepcopy(hp), store_dir, weights, str(tmp_path / "k"), str(tmp_path / "k.ckpt"))
    drop = set(job.MACHINE_DEPENDENT)
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in reference.items() if k not in drop}


# -- BitFit -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_layers", ["biases", "all", "frozen"])
@pytest.mark.parametrize("arch", ["vit_tiny", "resnet_tiny"])
def test_bitfit_moves_only_biases_and_the_head(arch, norm_layers, tiny_store, pretrained):
    net, strategy = start(arch, "bitfit", tiny_store, pretrained, norm_layers=norm_layers)
    norms = {f"{m}.{p}" for m, mod in net.net.named_modules()
             if isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm)) for p, _ in mod.named_parameters(recurse=False)}
    head = head_names(net)
    biases = {n for n in params_of(net) if n.endswith(".bias") and n not in norms and n not in head}
    expected = head | biases | {n for n in norms - head if norm_layers == "all"
                                or (norm_layers == "biases" and n.endswith(".bias"))}
    before_p, before_b = params_of(net), buffers_of(net)
    trainer_for(strategy, tiny_store, epochs=2).fit()
    after_p = params_of(net)
    assert trainable(net) == expected
    assert changed(before_p, after_p) == expected
    assert changed(before_b, buffers_of(net)) == set(), "BatchNorm statistics moved"
    if arch == "resnet_tiny":  # its convolutions have no bias: BatchNorm's shift is all BitFit has
        assert not biases and (norm_layers == "frozen") == (expected == head)


# -- layer-wise learning-rate decay --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vit_tiny", "densenet_tiny"])
def test_llrd_rates_fall_by_the_decay_per_block_from_the_top(arch, tiny_store, pretrained):
    lr, decay = 1e-2, 0.5
    net, strategy = start(arch, "llrd", tiny_store, pretrained, lr=lr, decay=decay)
    before = params_of(net)
    trainer = trainer_for(strategy, tiny_store, epochs=1)
    trainer.fit()
    groups = trainer.optimizer.param_groups
    n = net.n_blocks
    assert [g["lr"] for g in groups] == pytest.approx([lr * decay ** (n - 1 - b) for b in range(n)], rel=1e-12)
    assert groups[-1]["lr"] == lr and groups[-2]["lr"] == pytest.approx(lr * decay, rel=1e-12)
    for b, g in enumerate(groups):
        assert {id(p) for p in g["params"]} == {id(p) for _, blk, _, p in net.named_block_parameters() if blk == b}
    assert changed(before, params_of(net)) == set(before)  # everything trains
    assert strategy.describe()["block_rates"] == [g["lr"] for g in groups]


# -- k-NN probe ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["multiclass", "multilabel"])
def test_knn_predictions_are_sklearns_on_the_cached_features(which, tiny_store, tiny_multilabel_store, pretrained,
                                                            tmp_path):
    """The job's predictions (predictions.parquet) are scikit-learn's KNeighborsClassifier (k 11, cosine) fitted on
    the cached training features: the votes; without the cache, the features computed in the job give the same."""
    from sklearn.neighbors import KNeighborsClassifier

    store = tiny_store if which == "multiclass" else tiny_multilabel_store
    weights = pretrained("resnet_tiny")
    npy = tmp_path / "features.npy"
    F.extract(F.describe("resnet_tiny", WEIGHTS, None), str(store.root), weights, str(npy), str(F.meta_path(npy)),
              device="cpu", batch_size=32)
    hp = hparams("resnet_tiny", "knn")
    result = job.run(copy.deepcopy(hp), str(store.root), weights, str(tmp_path / "cached"), str(tmp_path / "c.ckpt"),
                     features_file=str(npy))
    rows = np.load(npy)
    y = store.targets("train")
    reference = KNeighborsClassifier(n_neighbors=11, metric="cosine", algorithm="brute")
    reference.fit(rows[store.indices("train")], y if which == "multilabel" else y.argmax(axis=1))
    found = read_predictions(tmp_path / "cached" / "predictions.parquet")
    for split in ("val", "test"):
        votes = reference.predict_proba(rows[store.indices(split)])
        want = np.stack([v[:, 1] for v in votes], axis=1) if which == "multilabel" else votes
        np.testing.assert_array_equal(found.scores(found.split(split)), want)
    for name in ("metrics.json", "predictions.parquet", "history.csv", "hparams.json"):
        assert (tmp_path / "cached" / name).is_file()
    assert result["trainable_params"] == 0 and result["epochs_run"] == 0
    assert json.loads((tmp_path / "cached" / "hparams.json").read_text())["cached_features"] == str(npy)

    job.run(copy.deepcopy(hp), str(store.root), weights, str(tmp_path / "plain"), str(tmp_path / "p.ckpt"))
    plain = read_predictions(tmp_path / "plain" / "predictions.parquet")
    np.testing.assert_allclose(plain.scores(plain.frame), found.scores(found.frame), atol=1e-12)


def test_knn_defaults():
    assert STRATEGIES.get("knn").defaults == {"k": 11, "metric": "cosine", "weights": "uniform"}


# -- the features cache: only for strategies that leave the backbone as it is ------------------------------------
def test_the_cache_serves_knn_and_none_of_the_strategies_that_change_the_backbone(tiny_store, tmp_path):
    for name in ("lora", "dora", "bitfit", "llrd"):
        spec = STRATEGIES.get(name)
        assert not spec.frozen_backbone and not uses_frozen_features(spec, {}), name
    assert uses_frozen_features(STRATEGIES.get("knn"), {})
    net = build_network("vit_tiny", 3)
    lora = STRATEGIES.get("lora")(context_for(net, tiny_store))
    with pytest.raises(RuntimeError, match="disagree"):  # the planner never gives it features: a bug if it did
        job.load_features(hparams("vit_tiny", "lora"), tiny_store, str(tmp_path / "any.npy"), lora,
                          torch.device("cpu"))


# -- cost beside quality ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,settings", [("lp", {}), ("lora", {"rank": 2})])
def test_every_job_records_what_it_cost(name, settings, tiny_store, pretrained, tmp_path):
    hp = hparams("resnet_tiny", name, settings)
    result = job.run(copy.deepcopy(hp), str(tiny_store.root), pretrained("resnet_tiny"), str(tmp_path / "out"),
                     str(tmp_path / "c.ckpt"))
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    net, *_ = job.build(hp, tiny_store, pretrained("resnet_tiny"), torch.device("cpu"))  # as the job built it
    head = sum(p.numel() for p in net.head_module().parameters())
    adapters = sum(p.numel() for n, p in net.net.named_parameters() if ".lora_" in n)
    total = sum(p.numel() for p in net.parameters())
    assert written["trainable_params"] == head + adapters and written["total_params"] == total
    assert written["trainable_percent"] == pytest.approx(100 * (head + adapters) / total, abs=1e-4)
    assert 0 < written["train_seconds"] <= written["seconds"]
    assert written["peak_memory_mb"] > 10 and written["peak_memory_of"] == "process peak RSS"
    assert result["trainable_params"] == written["trainable_params"]


def test_the_report_shows_cost_beside_quality(tmp_path):
    from medtl.report.classification import build_report

    files = []
    for strategy, trainable, seconds in (("ft", 1000, 4.0), ("lora", 50, 2.0)):
        for seed in (0, 1):
            d = tmp_path / "runs" / "ds" / "arch" / strategy / "lr0.001" / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({
                "dataset": "ds", "arch": "arch", "strategy": strategy, "lr": 0.001, "seed": seed,
                "primary_metric": "accuracy", "val": {"accuracy": 0.5 + seed / 10}, "test": {"accuracy": 0.6},
                "best_epoch": 1, "epochs_run": 2, "seconds": seconds + seed, "trainable_params": trainable,
                "total_params": 1000 + (50 if strategy == "lora" else 0),
                "trainable_percent": 100 * trainable / (1000 + (50 if strategy == "lora" else 0)),
                "train_seconds": seconds - 1, "peak_memory_mb": 300.0 + seed, "peak_memory_of": "process peak RSS"}))
            files.append(str(d / "metrics.json"))
    build_report(files, str(tmp_path / "report"))
    runs = pd.read_csv(tmp_path / "report" / "all_runs.csv")
    assert {"trainable_params", "total_params", "trainable_percent", "train_seconds", "peak_memory_mb"} <= set(runs)
    cost = pd.read_csv(tmp_path / "report" / "cost.csv").set_index("strategy")
    assert cost.loc["lora", "trainable_params"] == 50 and cost.loc["lora", "seconds_per_job"] == 2.5
    assert cost.loc["ft", "peak_memory_mb"] == 301.0
    md = (tmp_path / "report" / "cost.md").read_text()
    assert "Trainable parameters (% of the model)" in md and "Seconds per job" in md
    assert "| 50 (4.76 %)" in md and "| 1,000 (100 %)" in md
    assert "## Cost beside quality" in (tmp_path / "report" / "report.md").read_text()


def test_every_new_strategy_is_declared_and_documented():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for name in NEW:
        assert name in STRATEGIES.names() and f"| `{name}` |" in readme
