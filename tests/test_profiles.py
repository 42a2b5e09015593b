"""The Snakemake profiles in profiles/: what they make Snakemake ask for, without a cluster.
(tests/test_slurm.py runs profiles/slurm on a real SLURM scheduler.)"""
from __future__ import annotations

import re

import pytest
import yaml

from run_helpers import PROFILES
from workflow_helpers import REPO, snakemake, tiny_config, write_config

CONFIG = tiny_config(resources={"train": {"threads": 2, "gpu": 1, "mem_mb": 1500, "runtime": 10}})


def job_resources(log: str, rule: str) -> list[dict[str, str]]:
    """The resources line of every job of ``rule`` in Snakemake's output, in order."""
    found = []
    for m in re.finditer(rf"^(?:local)?rule {rule}:\n((?:    .*\n)+)", log, re.M):
        line = re.search(r"^    resources: (.*)$", m.group(1), re.M)
        found.append(dict(kv.split("=", 1) for kv in line.group(1).split(", ")))
    return found


def test_every_fetch_rule_runs_locally():
    """Rules that download (data, weights) run in the Snakemake process on the login node or workstation,
    never as cluster jobs: compute nodes need no internet. (tests/test_slurm.py checks it on SLURM.)"""
    fetch_rules = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for m in re.finditer(r"^rule (fetch_\w+):\n((?:[ \t]+.*\n|\n)+)", smk.read_text(), re.M):
            fetch_rules[m.group(1)] = re.search(r"^    localrule: True$", m.group(2), re.M) is not None
    assert {"fetch_dataset", "fetch_weights"} <= set(fetch_rules)
    assert all(fetch_rules.values()), fetch_rules


def test_profiles_are_plain_yaml_with_the_documented_settings():
    slurm = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm" and slurm["retries"] == 2
    assert slurm["rerun-incomplete"] is True and slurm["keep-going"] is True
    for rule in ("train", "pretrain"):
        assert "attempt" in slurm["set-resources"][rule]["runtime"]
        assert slurm["set-resources"][rule]["cpus_per_gpu"] == "threads"
    workstation = yaml.safe_load((PROFILES / "workstation" / "config.yaml").read_text())
    assert workstation["resources"]["gpu"] >= 1
    assert workstation["keep-going"] is True and workstation["rerun-incomplete"] is True
    assert workstation["printshellcmds"] is True


@pytest.mark.slow
def test_slurm_profile_requests(tmp_path, monkeypatch):
    """GPU, CPUs per GPU, memory and runtime of a training job; account and partition from the environment."""
    cfg = write_config(tmp_path / "config.yaml", CONFIG)
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    monkeypatch.delenv("SBATCH_PARTITION", raising=False)
    proc = snakemake(tmp_path, cfg, "-n", "--profile", str(PROFILES / "slurm"))
    train = job_resources(proc.stdout + proc.stderr, "train")
    assert len(train) == 2
    assert {k: train[0][k] for k in ("gpu", "cpus_per_gpu", "mem_mb", "runtime", "slurm_account",
                                     "slurm_partition")} == \
        {"gpu": "1", "cpus_per_gpu": "2", "mem_mb": "1500", "runtime": "120", "slurm_account": "",
         "slurm_partition": ""}  # empty: the plugin guesses the account and uses the default partition
    monkeypatch.setenv("SBATCH_ACCOUNT", "proj42")
    monkeypatch.setenv("SBATCH_PARTITION", "gpu_a100")
    proc = snakemake(tmp_path, cfg, "-n", "--profile", str(PROFILES / "slurm"))
    train = job_resources(proc.stdout + proc.stderr, "train")
    assert (train[0]["slurm_account"], train[0]["slurm_partition"]) == ("proj42", "gpu_a100")


@pytest.mark.slow
def test_each_retry_gets_more_runtime(tmp_path):
    """The profile's runtime expressions are evaluated per attempt by Snakemake 9 (run locally here:
    the job fails on every attempt because a directory blocks its checkpoint)."""
    config = {**CONFIG, "strategies": {"ft": {}}, "resources": {}}
    cfg = write_config(tmp_path / "config.yaml", config)
    (tmp_path / "results/checkpoints/runs/synth_derm/vgg_tiny/ft/lr0.001/seed0/resume.ckpt").mkdir(parents=True)
    proc = snakemake(tmp_path, cfg, "--profile", str(PROFILES / "slurm"), "--executor", "local", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert [r["runtime"] for r in job_resources(log, "train")] == ["120", "240", "480"], log[-3000:]


@pytest.mark.slow
def test_workstation_profile_runs_one_gpu_job_at_a_time(tmp_path):
    """Two training jobs of one thread each on two cores: they run together unless both need the
    profile's single GPU (with --resources gpu=2 this test fails)."""
    config = {**CONFIG, "resources": {"train": {"threads": 1, "gpu": 1}}}
    cfg = write_config(tmp_path / "config.yaml", config)
    proc = snakemake(tmp_path, cfg, "--profile", str(PROFILES / "workstation"))
    log = proc.stdout + proc.stderr
    events = re.findall(r"^(?:local)?rule (train):\n(?:    .*\n)*?    jobid: (\d+)$|^Finished jobid: (\d+) \(Rule: train\)",
                        log, re.M)
    running, most = set(), 0
    for started, jobid, finished in events:
        if started:
            running.add(jobid)
        else:
            running.discard(finished)
        most = max(most, len(running))
    assert len([e for e in events if e[0]]) == 2 and most == 1, log[-3000:]
