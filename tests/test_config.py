"""Config checks beyond the JSON schema: each bad value is named before any job starts."""
import copy
import os
import subprocess
import sys

import pytest

from medtl.workflow.config import ConfigError, canonical, check_config
from workflow_helpers import REPO, snakemake, tiny_config, write_config

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


@pytest.mark.parametrize("options, fragment", [
    ({"image_archive": [1]}, "datasets.chestxray14.options.image_archive: unknown setting (did you mean "
                             "'image_archives'?)"),
    ({"roots": "/data/nih"}, "datasets.chestxray14.options.roots: unknown setting (did you mean 'root'?)"),
    ({"image_archives": 1}, "datasets.chestxray14.options.image_archives: 1 is not allowed; expected a list of "
                            "integers >= 1 and <= 12"),
    ({"image_archives": [13]}, "datasets.chestxray14.options.image_archives: [13] is not allowed"),
    ({"retries": "4"}, "datasets.chestxray14.options.retries: '4' is not allowed; expected an integer >= 0"),
], ids=["image_archive-typo", "root-typo", "image_archives-number", "image_archives-13", "retries-text"])
def test_chestxray14_options_are_checked(options, fragment):
    """ChestX-ray14 declares every option it reads: a typo is named, with the option meant, not ignored."""
    assert fragment in errors_for(lambda c: c["datasets"].__setitem__("chestxray14", {"options": options}))


def test_chestxray14_options_it_reads_pass():
    config = copy.deepcopy(BASE)
    config["datasets"]["chestxray14"] = {"options": {
        "image_archives": [1, 12], "raw_data": "/data/archives", "root": "/data/nih/images", "verify": False,
        "urls": {"images_001.tar.gz": "http://x/1"}, "checksums": {"images_001.tar.gz": "md5:0"}, "retries": 1}}
    check_config(config)


def test_every_problem_is_reported_at_once():
    def change(c):
        c["datasets"]["nope"] = {}
        c["strategies"]["g_fl"] = {"unfreeze_every": -1}
    message = errors_for(change)
    assert "datasets.nope" in message and "strategies.g_fl" in message


def test_canonical_params_ignore_key_order():
    assert canonical({"b": 1, "a": {"y": 2, "x": 1}}) == canonical({"a": {"x": 1, "y": 2}, "b": 1})


# -- every setting against its declaration, through `snakemake -n` as a user meets it ---------------------------
# (issue 12: each of these used to be accepted and fail later, or never)
def _strategy(name, **settings):
    return lambda c: c["strategies"].__setitem__(name, settings)


def _dataset_options(**options):
    return lambda c: c["datasets"]["synth_derm"]["options"].update(options)


def _own_csv(**options):
    return lambda c: c["datasets"].__setitem__("mine", {"type": "csv_table", "options": {"root": "/data", **options}})


@pytest.mark.parametrize("change,fragments", [
    (_strategy("l2_sp", alpha="high"), ["strategies.l2_sp.alpha: 'high' is not allowed", "a number >= 0"]),
    (_strategy("l2_sp", alpha=-1), ["strategies.l2_sp.alpha: -1 is not allowed", "a number >= 0"]),
    (_strategy("auto_rgn", probe_batches=0), ["strategies.auto_rgn.probe_batches: 0 is not allowed",
                                              "an integer >= 1"]),
    (_strategy("spft", progressive="no"), ["strategies.spft.progressive: 'no' is not allowed", "true or false"]),
    (_strategy("spft", ema_decay=5), ["strategies.spft.ema_decay: 5 is not allowed", "a number >= 0 and < 1"]),
    (_strategy("lp_ft", lp_epochs="two"), ["strategies.lp_ft.lp_epochs: 'two' is not allowed", "an integer >= 0"]),
    (_strategy("spft", monitor="auc"), ["strategies.spft.monitor: 'auc' is not allowed", "one of 'map'", "'auroc'"]),
    (lambda c: c["architectures"]["vgg_tiny"].update(preprocess={"resize": 36, "crop": 48}),
     ["architectures.vgg_tiny.preprocess.crop: 48 is larger than resize 36", "crop <= resize"]),
    (_own_csv(label_columns="label"), ["datasets.mine.options.label_columns: 'label' is not allowed",
                                       "a list of strings"]),
    (_dataset_options(sise=36), ["datasets.synth_derm.options.sise: unknown setting (did you mean 'size'?)",
                                 "known: seed, size, n"]),
    (lambda c: c["datasets"].__setitem__("chestxray14", {"options": {"image_archive": [1]}}),
     ["datasets.chestxray14.options.image_archive: unknown setting (did you mean 'image_archives'?)"]),
], ids=["l2_sp-alpha-text", "l2_sp-alpha-negative", "auto_rgn-probe_batches-0", "spft-progressive-text",
        "spft-ema_decay-5", "lp_ft-lp_epochs-text", "spft-monitor-auc", "crop-over-resize", "csv-label_columns-text",
        "dataset-option-typo", "source-option-typo"])
def test_bad_settings_stop_the_dry_run_naming_key_value_and_what_is_allowed(tmp_path, change, fragments):
    config = tiny_config()
    change(config)
    proc = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "a bad setting was accepted"
    assert "ConfigError" in out and "InputFunctionException" not in out
    for fragment in fragments:
        assert fragment in out
    assert not (tmp_path / "results").exists()


def test_settings_come_from_the_declaration_that_jobs_use():
    from medtl.strategies import STRATEGIES

    spft = STRATEGIES.get("spft")
    assert spft.defaults["ema_decay"] == spft.settings.declared["ema_decay"].default == 0.99
    with pytest.raises(ValueError, match="ema_decay: 5 is not allowed"):
        spft.resolve({"ema_decay": 5})


def test_a_strategy_without_a_declaration_cannot_be_registered():
    from medtl.registry import DeclaredRegistry
    from medtl.settings import Settings
    from medtl.strategies import STRATEGIES, StrategySpec

    class Undeclared:  # an implementation registered as it was before declarations
        defaults = {"alpha": 0.1}

    with pytest.raises(TypeError, match="strategy 'undeclared' has no settings declaration"):
        STRATEGIES.register("undeclared")(Undeclared)
    with pytest.raises(TypeError, match="has no settings declaration"):
        STRATEGIES.register("undeclared")(StrategySpec("medtl.strategies.full:FullFineTuning", {"alpha": 0.1},
                                                       trains="everything"))
    assert "undeclared" not in STRATEGIES
    registry = DeclaredRegistry("strategy")  # a declared one is accepted, even with no settings
    registry.register("plain")(StrategySpec("medtl.strategies.full:FullFineTuning", Settings(), trains="everything"))
    assert "plain" in registry


def test_the_config_check_does_not_import_the_deep_learning_stack():
    """Planning stays light: the registries answer from declarations; only the jobs import PyTorch."""
    code = ("import sys, yaml\n"
            "from snakemake.utils import validate\n"
            "from medtl.workflow.config import check_config\n"
            "from medtl.workflow.dense_config import check_dense_config\n"
            "from medtl.models.spec import ARCHS\n"
            "for f in ('config.yaml', 'configs/paper.yaml', 'configs/spft.yaml'):\n"
            "    c = yaml.safe_load(open(f)); validate(c, 'schemas/config.schema.yaml', set_default=True)\n"
            "    check_config(c); check_dense_config(c)\n"
            "ARCHS.get('timm.convnext_tiny'); ARCHS.get('torchvision.resnet18'); ARCHS.get('timm_vit.vit_small_patch16_224')\n"
            "heavy = [m for m in ('torch', 'torchvision', 'timm', 'ultralytics', 'sklearn') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")})


#: configs that are overlays of another (Snakemake merges several --configfile in order)
OVERLAYS = {"sensitivity_monitor_accuracy.yaml": "sensitivity_monitor.yaml"}


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_is_valid_and_plans(name):
    """Each study config of configs/ passes the checks the workflow makes when it parses it, and every one of its
    training and dense jobs gets its settings (no Snakemake: the planner alone; a YAML slip such as an unquoted
    comma in a flow mapping surfaces here, not in a user's first run)."""
    import yaml
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "configs" / OVERLAYS.get(name, name)).read_text())
    if name in OVERLAYS:
        update_config(config, yaml.safe_load((REPO / "configs" / name).read_text()))
    # the GPU acceptance configs hold one config per Snakemake stage (benchmarks/gpu_acceptance.py runs each)
    stages = config["stages"].values() if "stages" in config else [{"config": config}]
    for stage in stages:
        if "config" in stage:
            plans_every_job({"results": "results", **stage["config"]})


def plans_every_job(config: dict) -> None:
    import copy

    from medtl.workflow.config import validate_config
    from medtl.workflow.dense_config import check_dense_config
    from medtl.workflow.dense_plan import DensePlan
    from medtl.workflow.plan import Plan

    validate_config(config, REPO / "schemas" / "config.schema.yaml")
    check_config(copy.deepcopy(config))
    check_dense_config(config)
    plan = Plan(config)
    runs = list(plan.training_runs())
    for run in runs:
        plan.train_hp(**run)
    dense = [r for task in ("detection", "segmentation") for r in DensePlan(config, task).runs()]
    for task in ("detection", "segmentation"):
        for run in DensePlan(config, task).runs():
            DensePlan(config, task).hp(**run)
    assert runs or dense
