"""Config checks beyond the JSON schema: each bad value is named before any job starts."""
import copy

import pytest

from medtl.workflow.config import ConfigError, canonical, check_config

BASE = {
    "datasets": {"synth_derm": {}},
    "source_datasets": {"synth_source": {}},
    "architectures": {"vgg_tiny": {"weights": {"type": "pretrain", "dataset": "synth_source"}}},
    "strategies": {"ft": {}, "g_lf": {"unfreeze_every": 2}, "spft": {"top_k": "all"}},
    "learning_rates": [0.001],
    "report": {"reference": "ft"},
}


def errors_for(change) -> str:
    config = copy.deepcopy(BASE)
    change(config)
    with pytest.raises(ConfigError) as info:
        check_config(config)
    return str(info.value)


def test_a_valid_config_passes():
    check_config(copy.deepcopy(BASE))


@pytest.mark.parametrize("change,fragments", [
    (lambda c: c["strategies"]["g_lf"].update(unfreeze_every=0), ["strategies.g_lf", "unfreeze_every", "0"]),
    (lambda c: c["strategies"]["g_lf"].update(unfreeze_every=True), ["strategies.g_lf", "unfreeze_every"]),
    (lambda c: c["strategies"]["spft"].update(top_k=-1), ["strategies.spft", "top_k"]),
    (lambda c: c["strategies"].update(lp_x={"type": "lp", "epochs": 3}), ["strategies.lp_x", "epochs"]),
    (lambda c: c["architectures"]["vgg_tiny"]["weights"].update(dataset="imagenet21k"),
     ["architectures.vgg_tiny.weights.dataset", "source_datasets"]),
    (lambda c: c["architectures"]["vgg_tiny"].update(weights={"type": "imagenet"}),
     ["architectures.vgg_tiny.weights", "no ImageNet weights"]),
    (lambda c: c["architectures"]["vgg_tiny"].update(strategies=["ft", "l2_sp"]),
     ["architectures.vgg_tiny.strategies", "l2_sp"]),
    (lambda c: c["strategies"]["ft"].update(architectures=["resnet50"]), ["strategies.ft.architectures", "resnet50"]),
    (lambda c: c.update(report={"reference": "fft"}), ["report.reference", "fft"]),
])
def test_bad_values_are_named(change, fragments):
    message = errors_for(change)
    for fragment in fragments:
        assert fragment in message


def test_every_problem_is_reported_at_once():
    def change(c):
        c["datasets"]["nope"] = {}
        c["strategies"]["g_fl"] = {"unfreeze_every": -1}
    message = errors_for(change)
    assert "datasets.nope" in message and "strategies.g_fl" in message


def test_canonical_params_ignore_key_order():
    assert canonical({"b": 1, "a": {"y": 2, "x": 1}}) == canonical({"a": {"x": 1, "y": 2}, "b": 1})
