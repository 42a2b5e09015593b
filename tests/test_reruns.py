"""Incremental reruns beyond tests/test_workflow.py: which jobs a config change schedules on a
finished run, read from the dry run's job list (not --list-changes). Per-item jobs (those with
wildcards) must match exactly; the aggregate ones (reports, `all`) must be exactly those that
depend on training results, or none."""
from __future__ import annotations

import copy

import pytest

from run_helpers import downstream_of_training, split_jobs
from workflow_helpers import scheduled_jobs, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

BASE = tiny_config()

# The same config as BASE, written by hand: comments, other key order, block instead of flow style,
# other number spellings. Snakemake sees the parsed config, so nothing reruns.
BASE_REFORMATTED = """\
# A study on one synthetic dataset.
training:            # one short epoch
  patience: 1
  batch_size: 16
  epochs: 1
strategies:
  ft: {}             # the reference
  l2_sp:
    beta: 1.0e-2
    alpha: 0.010
architectures:
  vgg_tiny:
    weights:
      type: none     # no pretraining
datasets:
  synth_derm:
    options:
      size: 36
      n: 60
learning_rates:
  - 1.0e-3         # YAML 1.1: a float needs the dot
seeds: [0]
results: results
"""


def trains(arch: str, strategies=("ft", "l2_sp")) -> list[tuple[str, str]]:
    return [("train", f"dataset=synth_derm, arch={arch}, strategy={s}, lr=0.001, seed=0") for s in strategies]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reruns")
    cfg = write_config(workdir / "config.yaml", BASE)
    snakemake(workdir, cfg)
    return workdir, downstream_of_training(workdir, cfg)


def schedule(workdir, config: dict | str):
    """Per-item jobs and aggregate rules a dry run schedules for ``config`` on the finished run."""
    path = workdir / "changed.yaml"
    if isinstance(config, str):
        path.write_text(config)
    else:
        write_config(path, config)
    return split_jobs(scheduled_jobs(workdir, path))


def changed(edit) -> dict:
    config = copy.deepcopy(BASE)
    edit(config)
    return config


def test_comments_and_formatting_rerun_nothing(finished):
    workdir, _ = finished
    assert schedule(workdir, BASE_REFORMATTED) == ([], set())


def test_unrelated_keys_rerun_nothing(finished):
    workdir, _ = finished

    def edit(c):
        c["source_datasets"] = {"synth_source": {}}   # a source no architecture pretrains on
        c["resources"] = {"train": {"threads": 2, "gpu": 1, "mem_mb": 999, "runtime": 5}}
        c["strategies"]["l2_sp"]["learning_rates"] = [0.001]  # the same grid, now per strategy

    assert schedule(workdir, changed(edit)) == ([], set())


def test_adding_an_architecture_schedules_only_its_jobs(finished):
    workdir, reports = finished
    config = changed(lambda c: c["architectures"].update(resnet_tiny={"weights": {"type": "none"}}))
    jobs, aggregates = schedule(workdir, config)
    assert jobs == sorted(trains("resnet_tiny"))  # same preprocessing: the prepared store is reused
    assert aggregates == reports


def test_an_architecture_with_its_own_preprocessing_adds_one_store(finished):
    workdir, reports = finished
    entry = {"type": "resnet_tiny", "weights": {"type": "none"}, "preprocess": {"resize": 40, "crop": 32}}
    jobs, aggregates = schedule(workdir, changed(lambda c: c["architectures"].update(resnet_40=entry)))
    # the raw data is fetched once for every preprocessing: no fetch_dataset
    assert jobs == sorted([("prepare_dataset", "dataset=synth_derm, prep=r40_c32"), *trains("resnet_40")])
    assert aggregates == reports


def test_a_pretrained_architecture_adds_its_source_and_pretraining(finished):
    workdir, reports = finished

    def edit(c):
        c["source_datasets"] = {"synth_source": {"options": {"n": 60}}}
        c["architectures"]["resnet_tiny"] = {
            "weights": {"type": "pretrain", "dataset": "synth_source", "epochs": 1, "lr": 0.001}}

    jobs, aggregates = schedule(workdir, changed(edit))
    assert jobs == sorted([
        ("fetch_dataset", "dataset=synth_source"),
        ("prepare_dataset", "dataset=synth_source, prep=r36_c32"),
        ("pretrain", "arch=resnet_tiny, source=synth_source"),
        *trains("resnet_tiny"),
    ])
    assert aggregates == reports


def test_changing_one_dataset_option_reruns_its_chain_only(finished):
    workdir, reports = finished
    jobs, aggregates = schedule(workdir, changed(lambda c: c["datasets"]["synth_derm"]["options"].update(n=80)))
    assert jobs == sorted([("fetch_dataset", "dataset=synth_derm"),
                           ("prepare_dataset", "dataset=synth_derm, prep=r36_c32"), *trains("vgg_tiny")])
    assert aggregates == reports
