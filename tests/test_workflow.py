"""The workflow as users drive it: config checks, the study DAG, and what a config change reruns."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from workflow_helpers import REPO, scheduled_jobs, snakemake, tiny_config, write_config

# A run small enough to finish in seconds: one dataset, one architecture without
# pretraining, three strategies, one learning rate, one seed, one epoch.
TINY = tiny_config({"ft": {}, "lp": {}, "l2_sp": {"alpha": 0.01, "beta": 0.01}})


def dry_run_error(tmp_path, config: dict) -> str:
    cfg = write_config(tmp_path / "config.yaml", config)
    proc = snakemake(tmp_path, cfg, "-n", check=False)
    assert proc.returncode != 0, "a bad config was accepted"
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("section,key,fragment", [
    ("datasets", "no_such_data", "unknown dataset 'no_such_data'"),
    ("architectures", "resnet5", "unknown architecture 'resnet5'"),
    ("strategies", "l3_sp", "unknown strategy 'l3_sp'"),
])
def test_unknown_names_stop_before_any_job(tmp_path, section, key, fragment):
    config = copy.deepcopy(TINY)
    config[section][key] = {}
    out = dry_run_error(tmp_path, config)
    assert fragment in out and f"{section}.{key}" in out
    assert not (tmp_path / "results").exists()


def test_unknown_strategy_setting_is_named(tmp_path):
    config = copy.deepcopy(TINY)
    config["strategies"]["l2_sp"]["alpah"] = 0.1
    out = dry_run_error(tmp_path, config)
    assert "strategies.l2_sp" in out and "alpah" in out


def test_wrong_type_is_named(tmp_path):
    config = copy.deepcopy(TINY)
    config["training"]["epochs"] = "ten"
    out = dry_run_error(tmp_path, config)
    assert "epochs" in out and "ten" in out


def test_paper_config_builds_its_dag(tmp_path):
    """The first study (1,728 training jobs) plans without its data being present."""
    jobs = scheduled_jobs(tmp_path, REPO / "configs" / "paper.yaml")
    trains = [j for j in jobs if j[0] == "train"]
    assert len(trains) == 8 * 3 * 8 * 3 * 3
    assert sum(1 for j in jobs if j[0] == "fetch_weights") == 3
    # ResNet-50 is prepared at 232 px, DenseNet-121 and VGG-19 share the 256 px store
    assert sum(1 for j in jobs if j[0] == "prepare_dataset") == 8 * 2


@pytest.fixture(scope="module")
def finished_tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    cfg = write_config(workdir / "config.yaml", TINY)
    snakemake(workdir, cfg)
    return workdir


def reschedule(workdir, change) -> list[tuple[str, str]]:
    config = copy.deepcopy(TINY)
    change(config)
    cfg = write_config(workdir / "changed.yaml", config)
    return scheduled_jobs(workdir, cfg)


@pytest.mark.slow
def test_full_run_writes_results_and_report(finished_tiny_run):
    runs = sorted((finished_tiny_run / "results" / "runs").rglob("metrics.json"))
    assert len(runs) == 3
    hp = json.loads((runs[0].parent / "hparams.json").read_text())
    assert hp["training"]["epochs"] == 1 and "strategy_resolved" in hp
    table = (finished_tiny_run / "results/report/classification/tables/synth_derm.md").read_text()
    assert "l2_sp" in table and "vgg_tiny" in table
    assert reschedule(finished_tiny_run, lambda c: None) == []


@pytest.mark.slow
def test_adding_a_seed_schedules_only_that_seed_and_the_report(finished_tiny_run):
    jobs = reschedule(finished_tiny_run, lambda c: c["seeds"].append(1))
    trains = [wc for rule, wc in jobs if rule == "train"]
    assert len(trains) == 3 and all("seed=1" in wc for wc in trains)
    assert {rule for rule, _ in jobs} == {"train", "report_classification", "report_published", "all"}


@pytest.mark.slow
def test_changing_one_strategy_reruns_only_its_jobs(finished_tiny_run):
    jobs = reschedule(finished_tiny_run, lambda c: c["strategies"]["l2_sp"].update(alpha=0.1))
    trains = [wc for rule, wc in jobs if rule == "train"]
    assert len(trains) == 1 and "strategy=l2_sp" in trains[0]
    assert {rule for rule, _ in jobs} == {"train", "report_classification", "report_published", "all"}


@pytest.mark.slow
def test_resources_and_report_settings_rerun_no_training(finished_tiny_run):
    def change(c):
        c["resources"] = {"train": {"threads": 2, "mem_mb": 999}}
    assert reschedule(finished_tiny_run, change) == []
    jobs = reschedule(finished_tiny_run, lambda c: c.update(report={"effective_threshold": 0.01}))
    # report_published reads the classification report's intervals.csv
    assert {rule for rule, _ in jobs} == {"report_classification", "report_published", "all"}


@pytest.mark.slow
def test_changing_training_epochs_reruns_every_training_job(finished_tiny_run):
    jobs = reschedule(finished_tiny_run, lambda c: c["training"].update(epochs=2))
    assert sum(1 for rule, _ in jobs if rule == "train") == 3
    assert not any(rule in ("fetch_dataset", "prepare_dataset") for rule, _ in jobs)


@pytest.mark.slow
def test_timm_models_by_name_run_every_strategy(tmp_path):
    """timm.resnet18 (pretrained by the pipeline, so LP and LP-FT use cached features) and timm.convnext_tiny
    (no weights) with every strategy, at 64 px (at 32 px ResNet-18's last stage is 1 x 1, and a last batch of
    one image has one value per channel for BatchNorm), two epochs: every job finishes, one log line per epoch."""
    strategies = {"ft": {}, "lp": {}, "g_lf": {}, "g_fl": {}, "lp_ft": {"lp_epochs": 1}, "l2_sp": {}, "l1_sp": {},
                  "auto_rgn": {"probe_batches": 1}, "spft": {"head_epochs": 1, "top_k": 2}}
    small = {"resize": 72, "crop": 64}
    config = tiny_config(
        strategies,
        architectures={"timm.resnet18": {"weights": {"type": "pretrain", "dataset": "synth_source", "epochs": 1},
                                         "preprocess": small},
                       "timm.convnext_tiny": {"weights": {"type": "none"}, "preprocess": small}},
        datasets={"synth_derm": {"options": {"n": 60, "size": 72}}},
        source_datasets={"synth_source": {"options": {"n": 200, "size": 72}}},  # every class in every split
        training={"epochs": 2, "batch_size": 16, "patience": 2})
    cfg = write_config(tmp_path / "config.yaml", config)
    runs = [f"results/runs/synth_derm/{arch}/{s}/lr0.001/seed0" for arch in config["architectures"] for s in strategies]
    snakemake(tmp_path, cfg, *(f"{r}/metrics.json" for r in runs))
    assert (tmp_path / "results/features/synth_derm/timm.resnet18/pretrain-synth_source.npy").exists()
    for run in runs:
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        assert metrics["epochs_run"] == 2 and 0 <= metrics["test"]["accuracy"] <= 1
        log = (tmp_path / "results/logs/train" / run.removeprefix("results/runs/")).with_suffix(".log").read_text()
        assert log.count("[train] epoch ") == 2, log


def test_a_detection_only_study_plans_no_classification(tmp_path):
    """configs/nih_cxr14_bbox_cpu.yaml: no classification datasets, architectures or strategies; the DAG
    has the detection jobs and report only (no classification or published-numbers report)."""
    jobs = scheduled_jobs(tmp_path, REPO / "configs" / "nih_cxr14_bbox_cpu.yaml")
    rules = {rule for rule, _ in jobs}
    assert {"train_detection", "pretrain_detector", "report_detection"} <= rules
    assert not rules & {"train", "report_classification", "report_published", "report_spft"}


def test_a_config_without_any_task_is_refused(tmp_path):
    out = dry_run_error(tmp_path, {"seeds": [0]})
    assert "no task" in out and "datasets" in out and "detection" in out and "segmentation" in out


def test_classification_datasets_need_architectures_and_strategies(tmp_path):
    config = copy.deepcopy(TINY)
    del config["architectures"]
    out = dry_run_error(tmp_path, config)
    assert "need architectures" in out and "synth" in out


@pytest.mark.slow
def test_editing_fine_tuning_settings_reruns_no_pretraining(tmp_path):
    """Pretraining takes its epochs and batch size from the architecture's weights entry, never stops early
    and monitors the source's metric: editing those training settings reschedules no pretraining (and so
    none of the jobs after it but training), editing the weights entry does."""
    config = copy.deepcopy(TINY)
    config["source_datasets"] = {"synth_source": {"options": {"n": 200, "size": 36}}}  # every class in every split
    config["architectures"] = {"resnet_tiny": {"weights": {"type": "pretrain", "dataset": "synth_source", "epochs": 1}}}
    target = "results/weights/resnet_tiny/pretrain-synth_source.pt"
    snakemake(tmp_path, write_config(tmp_path / "config.yaml", config), target)

    def rules_after(change) -> set[str]:
        edited = copy.deepcopy(config)
        change(edited)
        return {rule for rule, _ in scheduled_jobs(tmp_path, write_config(tmp_path / "edited.yaml", edited), target)}

    assert rules_after(lambda c: c["training"].update(epochs=7, batch_size=8, patience=3, monitor="auroc")) == set()
    assert rules_after(lambda c: c["training"].update(optimizer="sgd")) == {"pretrain"}
    assert rules_after(lambda c: c["architectures"]["resnet_tiny"]["weights"].update(epochs=2)) == {"pretrain"}
