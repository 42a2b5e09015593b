"""One cache-key rule (medtl.workflow.plan, Settings.key): a training job's key is its settings resolved by
their declarations -- defaults included -- so a changed declared default reruns exactly the jobs that use it,
and a setting added later with a ``neutral`` value (what jobs did without it) reruns nothing.

The unit tests read the planner directly; the slow one edits a declaration in a copy of the workflow and asks
`snakemake -n` which jobs of a finished run it reruns. Under the rule before this one (strategy settings keyed
on the raw config) a changed default rerun nothing and the first and last tests fail."""
from __future__ import annotations

import copy
import dataclasses
import shutil

import pytest

from medtl.settings import Int, Number, Settings
from medtl.strategies import STRATEGIES
from medtl.training.declaration import TRAINING
from medtl.workflow.config import check_config
from medtl.workflow.plan import Plan, job_settings
from run_helpers import split_jobs
from workflow_helpers import REPO, scheduled_jobs, snakemake, tiny_config, write_config

CONFIG = tiny_config(strategies={"ft": {}, "lp_ft": {}, "spft": {"top_k": 2}, "l2_sp": {"alpha": 0.01}},
                     seeds=[0, 1])


def keys(config: dict) -> dict:
    plan = Plan(copy.deepcopy(config))
    return {tuple(r.values()): plan.train_hp(**r) for r in plan.training_runs()}


@pytest.fixture
def declared(monkeypatch):
    """Replace a strategy's declaration for one test, as an edit of declarations.py would."""
    def replace(name: str, settings: Settings):
        spec = STRATEGIES.get(name)
        monkeypatch.setitem(STRATEGIES._items, name, dataclasses.replace(spec, settings=settings))
    return replace


def test_the_registry_holds_its_specs_in_items():
    # the fixture above edits the registry where it keeps its declarations
    assert STRATEGIES._items["lp_ft"] is STRATEGIES.get("lp_ft")


def test_a_changed_declared_default_changes_exactly_the_keys_of_the_jobs_that_use_it(declared):
    check_config(copy.deepcopy(CONFIG))
    before = keys(CONFIG)
    spft = STRATEGIES.get("spft").settings
    declared("spft", Settings(spft, ema_decay=Number(0.995, minimum=0, below=1)))  # was 0.99
    after = keys(CONFIG)
    changed = sorted({k[2] for k in before if before[k] != after[k]})
    assert changed == ["spft"]
    assert all(before[k] != after[k] for k in before if k[2] == "spft")  # every seed, every rate
    assert after[next(k for k in after if k[2] == "spft")]["strategy"]["settings"]["ema_decay"] == 0.995


def test_a_default_the_config_overrides_changes_no_key(declared):
    before = keys(CONFIG)
    l2 = STRATEGIES.get("l2_sp").settings
    declared("l2_sp", Settings(l2, alpha=Number(0.5, minimum=0)))  # the config sets alpha itself
    declared("lp_ft", Settings(lp_epochs=Int(2, minimum=0)))       # the same default, declared again
    assert keys(CONFIG) == before


def test_a_new_setting_at_its_neutral_value_changes_no_key_and_reaches_the_job(declared):
    before = keys(CONFIG)
    lp_ft = STRATEGIES.get("lp_ft").settings
    declared("lp_ft", Settings(lp_ft, head_scale=Number(1.0, minimum=0, neutral=1.0)))
    after = keys(CONFIG)
    assert after == before
    hp = after[next(k for k in after if k[2] == "lp_ft")]
    assert job_settings(hp)["strategy"]["settings"]["head_scale"] == 1.0
    # its default changed later: keyed from then on, so exactly lp_ft's jobs rerun
    declared("lp_ft", Settings(lp_ft, head_scale=Number(2.0, minimum=0, neutral=1.0)))
    later = keys(CONFIG)
    assert sorted({k[2] for k in before if before[k] != later[k]}) == ["lp_ft"]
    assert job_settings(later[next(k for k in later if k[2] == "lp_ft")])["strategy"]["settings"]["head_scale"] == 2.0


def test_a_setting_left_out_at_neutral_is_restored_at_neutral_not_at_a_changed_default(declared):
    lp_ft = STRATEGIES.get("lp_ft").settings
    declared("lp_ft", Settings(lp_ft, head_scale=Number(1.0, minimum=0, neutral=1.0)))
    plan = Plan(copy.deepcopy(CONFIG))
    run = next(r for r in plan.training_runs() if r["strategy"] == "lp_ft")
    hp = plan.train_hp(**run)  # a job keyed while the default was the neutral value
    assert "head_scale" not in hp["strategy"]["settings"]
    declared("lp_ft", Settings(lp_ft, head_scale=Number(2.0, minimum=0, neutral=1.0)))  # the default changes
    assert job_settings(hp)["strategy"]["settings"]["head_scale"] == 1.0  # that key still means what it did
    # a value the config writes is keyed as written, at the neutral value too
    config = copy.deepcopy(CONFIG)
    config["strategies"]["lp_ft"] = {"head_scale": 1.0}
    written = Plan(config).train_hp(**run)
    assert written["strategy"]["settings"]["head_scale"] == 1.0
    assert job_settings(written)["strategy"]["settings"]["head_scale"] == 1.0


def test_the_training_section_is_keyed_with_its_declared_defaults():
    hp = keys(CONFIG)[next(iter(keys(CONFIG)))]
    assert set(hp["training"]) == set(TRAINING.declared)  # every setting at its value, none left implicit
    assert hp["training"]["amp"] is True and hp["training"]["optimizer"] == "adam"
    assert job_settings(hp)["training"] == hp["training"]


def test_the_job_restores_what_the_key_stands_for():
    plan = Plan(copy.deepcopy(CONFIG))
    run = next(r for r in plan.training_runs() if r["strategy"] == "spft")
    restored = job_settings(plan.train_hp(**run))
    assert restored["strategy"]["settings"] == STRATEGIES.get("spft").resolve({"top_k": 2})
    assert job_settings(restored) == restored  # idempotent: build() and run() may both call it


# -- through Snakemake: a declaration edited in a copy of the workflow, a dry run on a finished run ------------
WORKFLOW = ("Snakefile", "rules", "schemas", "workflow_scripts", "references", "report", "envs")


def workflow_copy(root):
    root.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW:
        src = REPO / name
        (shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, root / name))
    return root


def dry_run(workdir, configfile, snakefile):
    return split_jobs(scheduled_jobs(workdir, configfile, snakefile=snakefile))


@pytest.mark.slow
def test_snakemake_reruns_exactly_the_jobs_of_a_changed_declared_default(tmp_path):
    config = tiny_config(strategies={"ft": {}, "lp_ft": {}, "l2_sp": {}})
    workdir = tmp_path / "run"
    workdir.mkdir()
    cfg = write_config(workdir / "config.yaml", config)
    snakemake(workdir, cfg)
    assert scheduled_jobs(workdir, cfg) == []
    code = workflow_copy(tmp_path / "workflow")
    assert dry_run(workdir, cfg, code / "Snakefile")[0] == []  # a copy of the same code: nothing to do

    declarations = code / "workflow_scripts" / "medtl" / "strategies" / "declarations.py"
    text = declarations.read_text()
    # a new l2_sp setting whose neutral value does what l2_sp did without it: nothing reruns
    added = text.replace('alpha=Number(0.01, minimum=0,', 'scale=Number(1.0, minimum=0, neutral=1.0, doc="new"),\n'
                         '    alpha=Number(0.01, minimum=0,', 1)
    assert added != text
    declarations.write_text(added)
    assert dry_run(workdir, cfg, code / "Snakefile")[0] == []

    # LP-FT's declared default changes: its jobs, and only they, rerun (the config leaves lp_epochs unset)
    edited = added.replace("lp_epochs=Int(2, minimum=0,", "lp_epochs=Int(1, minimum=0,", 1)
    assert edited != added
    declarations.write_text(edited)
    jobs, _ = dry_run(workdir, cfg, code / "Snakefile")
    assert [w for rule, w in jobs if rule == "train"] == [
        "dataset=synth_derm, arch=vgg_tiny, strategy=lp_ft, lr=0.001, seed=0"]
    assert {rule for rule, _ in jobs} == {"train"}


# -- one source for "does this run train the head on a frozen backbone?" ----------------------------------------
@pytest.mark.parametrize("declared_when, settings, expected", [
    (lambda s: s["lp_epochs"] > 0, {}, True),
    (lambda s: s["lp_epochs"] > 0, {"lp_epochs": 0}, False),
    (None, {}, False),  # a head-first implementation declared without frozen epochs: no features, anywhere
])
def test_planning_and_the_job_agree_about_a_new_head_first_strategys_features(
        monkeypatch, make_context, declared_when, settings, expected):
    from medtl.models import build_network
    from medtl.strategies import uses_frozen_features
    from medtl.strategies.spec import StrategySpec

    toy = StrategySpec("medtl.strategies.lp_ft:LinearProbeThenFineTune",
                       Settings(lp_epochs=Int(1, minimum=0)), trains="head first, then everything",
                       frozen_backbone_when=declared_when)
    monkeypatch.setitem(STRATEGIES._items, "head_first", toy)
    config = tiny_config(strategies={"head_first": settings}, source_datasets={"synth_source": {}},
                         architectures={"resnet_tiny": {"weights": {"type": "pretrain", "dataset": "synth_source"}}})
    plan = Plan(config)
    planned = plan.uses_features("head_first", "resnet_tiny")
    hp = plan.train_hp(**next(plan.training_runs()))
    strategy = STRATEGIES.get("head_first")(make_context(build_network("resnet_tiny", 3)),
                                            **job_settings(hp)["strategy"]["settings"])
    assert planned == uses_frozen_features(strategy) == expected


# -- the same rule for detection and segmentation jobs ---------------------------------------------------------
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_a_changed_dense_strategy_default_changes_exactly_its_jobs_keys(task, monkeypatch):
    import yaml

    from medtl.workflow.dense_plan import DensePlan, dense_job_settings, strategies_of

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    plan = DensePlan(config, task)
    before = {tuple(r.values()): plan.hp(**r) for r in plan.runs()}
    registry = strategies_of(task)
    spec = registry.get("spft")
    unset = next(k for k in spec.settings if k not in (config[task]["strategies"]["spft"] or {})
                 and type(spec.settings[k]) in (int, float))
    new_default = spec.settings[unset] + 1
    changed = Settings(spec.settings, **{unset: dataclasses.replace(spec.settings.declared[unset],
                                                                     default=new_default)})
    monkeypatch.setitem(registry._items, "spft", dataclasses.replace(spec, settings=changed))
    after = {tuple(r.values()): plan.hp(**r) for r in plan.runs()}
    assert sorted({k[2] for k in before if before[k] != after[k]}) == ["spft"]
    job = dense_job_settings(after[next(k for k in after if k[2] == "spft")], task)
    assert job["strategy"]["settings"][unset] == new_default
    assert set(job["training"]) >= set(plan.training_declaration())  # every training setting, defaults included


# -- the architectures' weights entries and the reports: declared like the rest ----------------------------
PRETRAINED = tiny_config(strategies={"ft": {}, "scratch": {}},
                         architectures={"vgg_tiny": {"weights": {"type": "pretrain", "dataset": "source"}}},
                         source_datasets={"source": {"type": "synth_derm", "options": {"n": 60, "size": 36}}})


def replace_default(monkeypatch, declaration: Settings, name: str, default):
    """Change a declared default in place, as an edit of its declaration would (its neutral value stays)."""
    monkeypatch.setitem(declaration.declared, name, dataclasses.replace(declaration.declared[name], default=default))


def test_a_weights_entry_is_keyed_with_its_type_s_declared_defaults(monkeypatch):
    from medtl.models.weights_declaration import WEIGHTS, weights_settings

    check_config(copy.deepcopy(PRETRAINED))
    plan = Plan(copy.deepcopy(PRETRAINED))
    # at the defaults the entry read with .get(key, default) before: its key is the entry as written, so
    # upgrading reruns no pretraining
    assert plan.arch_entry("vgg_tiny")["weights"] == {"type": "pretrain", "dataset": "source"}
    before = keys(PRETRAINED)
    replace_default(monkeypatch, WEIGHTS["pretrain"], "epochs", 7)
    keyed = Plan(copy.deepcopy(PRETRAINED)).arch_entry("vgg_tiny")["weights"]
    assert keyed == {"type": "pretrain", "dataset": "source", "epochs": 7}  # the pretraining job reruns
    assert weights_settings(keyed)["epochs"] == 7 and weights_settings(keyed) == weights_settings(weights_settings(keyed))
    after = keys(PRETRAINED)
    # and so does every job that starts from those weights; a job from scratch does not
    assert sorted({k[2] for k in before if before[k] != after[k]}) == ["ft"]
    # a value the entry writes stays in its key, at the neutral value too: it was keyed as written (config.yaml
    # writes lr: 0.001), so no finished pretraining is rerun
    written = {"type": "pretrain", "dataset": "source", "epochs": 6, "lr": 0.001}
    config = {**PRETRAINED, "architectures": {"vgg_tiny": {"weights": written}}}
    assert Plan(copy.deepcopy(config)).arch_entry("vgg_tiny")["weights"] == written


def test_pretraining_runs_the_entry_s_declared_epochs(monkeypatch, tmp_path, tiny_store, capsys):
    from medtl.models.weights_declaration import WEIGHTS
    from medtl.pretrain import pretrain

    replace_default(monkeypatch, WEIGHTS["pretrain"], "epochs", 1)
    keyed = Plan(copy.deepcopy(PRETRAINED)).arch_entry("vgg_tiny")["weights"]  # what the rule's params hold
    pretrain("vgg_tiny", keyed, {"device": "cpu", "patience": 5, "batch_size": 16}, str(tiny_store.root),
             str(tmp_path / "w.pt"), str(tmp_path / "ckpt"), threads=1)
    assert "for 1 epochs" in capsys.readouterr().err


@pytest.mark.parametrize("entry, message", [
    ({"type": "imagenet", "epochs": 3}, r"weights\.epochs: not a setting of weights type 'imagenet' \(only of pretrain\)"),
    ({"type": "pretrain", "dataset": "source", "epoch": 3}, r"weights \(type pretrain\)\.epoch: unknown setting "
                                                            r"\(did you mean 'epochs'\?\)"),
    ({"type": "checkpoint"}, r"weights \(type checkpoint\)\.path: required"),
    ({"type": "pretrain", "dataset": "source", "lr": 0}, r"weights \(type pretrain\)\.lr: 0 is not allowed; expected a number > 0"),
])
def test_a_weights_entry_is_checked_by_its_type_s_declaration(entry, message):
    from medtl.workflow.config import ConfigError

    config = copy.deepcopy(PRETRAINED)
    config["architectures"]["vgg_tiny"]["weights"] = entry
    with pytest.raises(ConfigError, match=r"architectures\.vgg_tiny\." + message):
        check_config(config)


def test_the_report_params_hold_the_declared_defaults(monkeypatch):
    from medtl.report.declaration import DENSE_REPORT, REPORT
    from medtl.report.statistics import Resampling
    from medtl.workflow.dense_plan import DensePlan

    import yaml

    params = Plan(copy.deepcopy(CONFIG)).report_settings()
    assert {k: params[k] for k in REPORT} == dict(REPORT)
    replace_default(monkeypatch, REPORT, "bootstrap_resamples", 321)
    params = Plan(copy.deepcopy(CONFIG)).report_settings()  # the report reruns
    assert params["bootstrap_resamples"] == 321 and Resampling.from_config(params).n_resamples == 321
    assert Resampling.from_config({}).n_resamples == 321  # a report built without the workflow too
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    replace_default(monkeypatch, DENSE_REPORT, "n_images", 2)
    assert DensePlan(config, "segmentation").report_settings()["n_images"] == 2


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_a_dense_model_s_weights_entry_is_keyed_with_its_declared_defaults(task, monkeypatch):
    import yaml

    from medtl.models.weights_declaration import DENSE_WEIGHTS, weights_settings
    from medtl.workflow.dense_plan import DensePlan

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    plan = DensePlan(config, task)
    model, entry = next((m, e) for m, e in config[task]["models"].items()
                        if (e.get("weights") or {}).get("type") == "pretrain")
    source = entry["weights"]["dataset"]
    assert plan.model_key(model)["weights"] == entry["weights"]  # at today's defaults: the entry as written
    before = plan.pretrain_entry(model, source)
    replace_default(monkeypatch, DENSE_WEIGHTS["pretrain"], "seed", 3)
    after = plan.pretrain_entry(model, source)
    assert after != before and weights_settings(after["weights"], DENSE_WEIGHTS)["seed"] == 3
    pretrained = {m for m, e in config[task]["models"].items() if (e.get("weights") or {}).get("type") == "pretrain"}
    assert {r["model"] for r in plan.runs() if plan.hp(**r)["model"]["weights"].get("seed") == 3} == pretrained


@pytest.mark.parametrize("section, message", [
    ({"report": {"bootstrap_resamples": 1000.0}}, r"report\.bootstrap_resamples: 1000\.0 is not allowed; expected an integer >= 100"),
    ({"training": {"epochs": 6.0}}, r"training\.epochs: 6\.0 is not allowed; expected an integer >= 1"),
])
def test_the_declared_sections_are_checked_with_the_config(section, message):
    # JSON Schema calls 1000.0 an integer; the declarations do not: the check says so by key path, before the
    # planner would stop the parse with a bare error
    from medtl.workflow.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        check_config({**copy.deepcopy(CONFIG), **section})


def test_null_in_a_weights_entry_is_its_declared_default():
    from medtl.models.weights_declaration import weights_settings
    from medtl.workflow.config import validate_config

    config = copy.deepcopy(CONFIG)
    config["architectures"] = {"vgg_tiny": {"weights": {"type": "hub", "repo": None, "revision": None}}}
    validate_config(config, REPO / "schemas" / "config.schema.yaml")
    check_config(config)
    assert weights_settings(Plan(config).arch_entry("vgg_tiny")["weights"])["repo"] is None
