"""MedMNIST v2's own benchmark (configs/medmnist_v2.yaml, issue 18 item 3): the CIFAR-stem ResNets of its code,
the step schedule (``training.schedule``), the config and the published numbers it is compared with."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from medtl.models import build_network
from medtl.models.spec import ARCHS
from medtl.strategies import STRATEGIES
from medtl.strategies.base import MultiStep, lr_factor
from medtl.training import job
from medtl.training.trainer import Trainer
from medtl.workflow.config import ConfigError, check_config, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "schemas" / "config.schema.yaml"
CONFIG = REPO / "configs" / "medmnist_v2.yaml"

# Parameters of MedMNIST/experiments MedMNIST2D/models.py ResNet18 / ResNet50 (in_channels=3), counted with
# sum(p.numel() for p in model.parameters()) on that file as of commit 70b6b3a (2024-07-11)
MEDMNIST_PARAMS = {("resnet18_cifar", 2): 11_169_858, ("resnet18_cifar", 5): 11_171_397,
                   ("resnet50_cifar", 2): 23_504_450, ("resnet50_cifar", 5): 23_510_597}


# -- the architectures --------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet18_cifar", "resnet50_cifar"])
def test_cifar_stem_resnets_are_medmnists_own(arch):
    """3x3 stride-1 first convolution, no max-pool, 28 px in and a 4x4 map before the pool; the parameter counts
    of MedMNIST's models.py for 2 and 5 classes; the same 6 blocks as resnet50; PyTorch's default initialisation
    (every convolution inside kaiming_uniform(a=sqrt(5))'s bound, which torchvision's Kaiming-normal would leave)."""
    spec = ARCHS.get(arch)
    assert spec.n_blocks == 6 and spec.default_preprocess == {"resize": 28, "crop": 28}
    assert spec.imagenet_weights is None
    for k in (2, 5):
        torch.manual_seed(0)
        net = build_network(arch, k)
        assert sum(p.numel() for p in net.parameters()) == MEDMNIST_PARAMS[arch, k]
    model = net.net
    conv1 = model.conv1
    assert (conv1.kernel_size, conv1.stride, conv1.padding, conv1.in_channels) == ((3, 3), (1, 1), (1, 1), 3)
    assert isinstance(model.maxpool, nn.Identity)
    seen = []
    model.layer4.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    model.eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 28, 28)).shape == (2, 5)
    assert seen == [(4, 4)]
    assert net.n_blocks == 6
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            assert m.weight.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7


# -- the schedule ---------------------------------------------------------------------------------------------
def test_multistep_factor_is_multisteplr_stepped_per_epoch():
    """MedMNIST's MultiStepLR(milestones=[50, 75], gamma=0.1), stepped once per epoch, at every optimizer step."""
    factor = MultiStep(steps_per_epoch=5, milestones=(50, 75), gamma=0.1)
    model = nn.Linear(1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[50, 75], gamma=0.1)
    for epoch in range(100):
        for step in range(5):
            assert math.isclose(1e-3 * factor(epoch * 5 + step), opt.param_groups[0]["lr"], rel_tol=1e-9)
        opt.step()
        ref.step()
    assert lr_factor(None, 100, 5) is None and lr_factor({"type": "constant"}, 100, 5) is None


def _store(make_store, tmp_path):
    make_store(root=tmp_path / "store", task="binary", n=60, size=28, channels=1)
    return str(tmp_path / "store")


def _hp(schedule=None, epochs=6, strategy="ft"):
    training = {"epochs": epochs, "batch_size": 16, "patience": 0, "device": "cpu", "optimizer": "adam",
                "eval_batch_size": 64, "monitor": "auroc", "normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    if schedule is not None:
        training["schedule"] = schedule
    return {"dataset": {"name": "tiny", "metrics": ["auroc", "accuracy"], "primary_metric": "auroc"},
            "arch": {"name": "resnet_tiny", "weights": {"type": "none"}, "preprocess": {"resize": 28, "crop": 28}},
            "strategy": {"name": strategy, "type": strategy, "settings": {}}, "training": training,
            "lr": 1e-2, "seed": 0}


def _lrs_per_epoch(monkeypatch) -> dict[int, list[float]]:
    """The optimizer's rate at every step, per epoch, as the trainer runs them."""
    seen: dict[int, list[float]] = {}
    original = Trainer.run_epoch

    def run_epoch(self, epoch, optimizer, scheduler):
        rates = seen[epoch] = []
        hook = optimizer.register_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
        try:
            return original(self, epoch, optimizer, scheduler)
        finally:
            hook.remove()

    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)
    return seen


def test_multistep_schedule_through_a_job(make_store, tmp_path, monkeypatch):
    """training.schedule {multistep, milestones [2, 4], gamma 0.1} through job.run (the Trainer's fit loop):
    every step of epochs 0-1 at lr, 2-3 at lr x 0.1, 4-5 at lr x 0.01; the history and metrics as usual."""
    store = _store(make_store, tmp_path)
    seen = _lrs_per_epoch(monkeypatch)
    hp = _hp({"type": "multistep", "milestones": [2, 4], "gamma": 0.1})
    result = job.run(copy.deepcopy(hp), store, None, str(tmp_path / "out"), str(tmp_path / "ckpt"))
    assert sorted(seen) == list(range(6)) and all(len(v) == 3 for v in seen.values())  # 36 images / 16
    for epoch, rates in seen.items():
        want = 1e-2 * 0.1 ** ((epoch >= 2) + (epoch >= 4))
        assert all(math.isclose(r, want, rel_tol=1e-9) for r in rates), (epoch, rates)
    assert result["epochs_run"] == 6 and result["monitor"] == "auroc"


def test_a_killed_job_resumes_on_the_schedule(make_store, tmp_path, monkeypatch):
    """The scheduler's state is in the checkpoint: killed in epoch 3, the rerun trains epochs 3-5 at the rates of
    an uninterrupted run and ends with its history."""
    import pandas as pd

    store = _store(make_store, tmp_path)
    hp = _hp({"type": "multistep", "milestones": [2, 4], "gamma": 0.1})
    job.run(copy.deepcopy(hp), store, None, str(tmp_path / "ref"), str(tmp_path / "ref.ckpt"))
    original = Trainer.run_epoch

    def die(self, epoch, optimizer, scheduler):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch, optimizer, scheduler)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "run_epoch", die)
        with pytest.raises(KeyboardInterrupt):
            job.run(copy.deepcopy(hp), store, None, str(tmp_path / "out"), str(tmp_path / "out.ckpt"))
    seen = _lrs_per_epoch(monkeypatch)
    job.run(copy.deepcopy(hp), store, None, str(tmp_path / "out"), str(tmp_path / "out.ckpt"))
    assert sorted(seen) == [3, 4, 5]
    assert all(math.isclose(r, 1e-3 if e == 3 else 1e-4, rel_tol=1e-9) for e, rates in seen.items() for r in rates)
    ref, got = (pd.read_csv(tmp_path / d / "history.csv").drop(columns="seconds") for d in ("ref", "out"))
    pd.testing.assert_frame_equal(got, ref)


def test_unset_schedule_is_todays_constant_rate(make_store, tmp_path, monkeypatch):
    """No training.schedule: no scheduler at all (as before the setting existed); every step at lr."""
    store = _store(make_store, tmp_path)
    seen = _lrs_per_epoch(monkeypatch)
    built = []
    setup = Trainer.setup

    def record(self):
        setup(self)
        built.append(self.scheduler)

    monkeypatch.setattr(Trainer, "setup", record)
    job.run(_hp(None, epochs=3), store, None, str(tmp_path / "out"), str(tmp_path / "ckpt"))
    assert built == [None]
    assert all(r == 1e-2 for rates in seen.values() for r in rates)


def test_cosine_schedule_reaches_zero_at_the_end():
    f = lr_factor({"type": "cosine", "warmup_epochs": 1}, epochs=4, steps_per_epoch=2)
    assert [round(f(s), 6) for s in range(2)] == [0.5, 1.0]  # warm-up over the first epoch
    assert f(2) == 1.0 and f(8) == 0.0 and 0 < f(5) < 1


@pytest.mark.parametrize("strategy", ["spft", "auto_rgn"])
def test_strategies_with_their_own_rates_refuse_another_schedule(strategy, make_net, make_context):
    ctx = make_context(make_net("resnet_tiny"))
    ctx.schedule = {"type": "multistep", "milestones": [2]}
    with pytest.raises(ValueError, match="sets its learning rates itself"):
        STRATEGIES.get(strategy)(ctx)
    ctx.schedule = {"type": "constant"}
    STRATEGIES.get(strategy)(ctx)  # constant is what they had


@pytest.mark.parametrize("schedule, message", [
    ({"type": "multistep"}, r"training\.schedule\.milestones: required"),
    ({"type": "cosine", "milestones": [5]}, r"training\.schedule\.milestones: unknown key"),
    ({"type": "multistep", "milestones": [5], "warmup_epochs": 1}, r"training\.schedule\.warmup_epochs: unknown key"),
    ({"type": "step"}, r"training\.schedule\.type: 'step' is not allowed"),
    ({"type": "multistep", "milestones": [0]}, r"training\.schedule\.milestones\[0\]"),
])
def test_schedule_settings_are_checked_while_planning(schedule, message):
    cfg = {"training": {"schedule": schedule}}
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, SCHEMA)


def test_a_config_without_a_schedule_keeps_its_params():
    """The schema gives training.schedule no default: a config that leaves it unset has the same training
    section, so the same job params, as before the setting existed (no cached job reruns)."""
    for name in ("paper.yaml", "spft.yaml"):
        cfg = yaml.safe_load((REPO / "configs" / name).read_text())
        validate_config(cfg, SCHEMA)
        assert "schedule" not in cfg["training"], name


# -- the config and the published numbers --------------------------------------------------------------------
def test_the_config_is_the_benchmarks_protocol():
    cfg = yaml.safe_load(CONFIG.read_text())
    validate_config(cfg, SCHEMA)
    check_config(cfg)
    t = cfg["training"]
    assert (t["epochs"], t["batch_size"], t["optimizer"], t["weight_decay"]) == (100, 128, "adam", 0.0)
    assert cfg["learning_rates"] == [0.001] and cfg["seeds"] == [0, 1, 2]
    assert t["schedule"] == {"type": "multistep", "milestones": [50, 75], "gamma": 0.1}
    assert t["patience"] == 0 and t["monitor"] == "auroc"  # 100 epochs; the best validation AUC is tested
    assert t["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert set(cfg["datasets"]) == {"breastmnist", "retinamnist"}
    for arch, entry in cfg["architectures"].items():
        assert entry["weights"] == {"type": "none"} and entry["preprocess"] == {"resize": 28, "crop": 28}, arch
    assert list(cfg["strategies"]) == ["ft"]


def test_published_numbers_match_the_configs_names():
    from medtl.report.published import load_reference

    ref = load_reference(REPO / "references" / "published.yaml")
    assert ref.studies["medmnist_v2"]["obtained"] and ref.studies["medmnist_v2"]["config"] == "configs/medmnist_v2.yaml"
    rows = ref.rows[ref.rows["study"] == "medmnist_v2"]
    table = {(r.dataset, r.arch, r.metric): r.value for r in rows.itertuples()}
    assert table == {
        ("breastmnist", "resnet18_cifar", "auroc"): 0.901, ("breastmnist", "resnet18_cifar", "accuracy"): 0.863,
        ("breastmnist", "resnet50_cifar", "auroc"): 0.857, ("breastmnist", "resnet50_cifar", "accuracy"): 0.812,
        ("retinamnist", "resnet18_cifar", "auroc"): 0.717, ("retinamnist", "resnet18_cifar", "accuracy"): 0.524,
        ("retinamnist", "resnet50_cifar", "auroc"): 0.726, ("retinamnist", "resnet50_cifar", "accuracy"): 0.528,
    }
    assert set(rows["strategy"]) == {"ft"} and set(rows["split"]) == {"test"}
    assert rows["source"].str.contains("Table 3").all()
