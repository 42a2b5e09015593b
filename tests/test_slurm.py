"""The classification workflow on a real SLURM scheduler, through profiles/slurm.

Needs a SLURM controller this machine can submit to. With CI=true or MEDTL_SLURM_SETUP=1, as root
with apt-get, .ci/slurm_setup.sh first installs and starts a single-node cluster (munge, slurmctld,
slurmd; no accounting database). Elsewhere the test skips when there is no working `sbatch`/`sinfo`.
Under CI=true it never skips: a cluster that cannot be set up fails the test (MEDTL_SLURM_SETUP=0
opts out explicitly).

The test cluster has no accounting (`sacct` does not work), hence --slurm-status-command squeue
(its MinJobAge keeps finished jobs visible) and --slurm-no-account. Its node advertises one
count-only GPU, so the training jobs go through the same --gpus/--cpus-per-gpu request as on a GPU
cluster (the Python code itself runs on the CPU there).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from run_helpers import PROFILES, assert_same_results, finish, start_snakemake
from workflow_helpers import REPO, snakemake, tiny_config, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SETUP = REPO / ".ci" / "slurm_setup.sh"
SLURM_ARGS = (
    "--profile", str(PROFILES / "slurm"),
    "--slurm-status-command", "squeue",     # no accounting database on the test cluster
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "5",
    "--slurm-keep-successful-logs",         # to show each job's SLURM log afterwards
)
# The demo's classification part, small: one dataset, an architecture without pretraining, two
# strategies, one learning rate, one seed, one epoch; training jobs ask for one GPU.
CONFIG = tiny_config(resources={"train": {"threads": 1, "gpu": 1, "mem_mb": 1500, "runtime": 10}})
RUNS = [f"synth_derm/vgg_tiny/{s}/lr0.001/seed0" for s in CONFIG["strategies"]]


def _flag(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


def _cluster_up() -> bool:
    if not (shutil.which("sbatch") and shutil.which("sinfo")):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s.strip("*~#") in ("idle", "mixed", "allocated", "completing")
                                       for s in out.stdout.split())


@pytest.fixture(scope="module")
def slurm_cluster():
    in_ci = _flag("CI") in ("true", "1", "yes")
    setup = _flag("MEDTL_SLURM_SETUP")
    wanted = setup == "1" or (in_ci and setup != "0")
    if not wanted:
        if not _cluster_up():
            pytest.skip("no working SLURM controller (sbatch/sinfo); CI=true or MEDTL_SLURM_SETUP=1 "
                        "as root sets one up with .ci/slurm_setup.sh")
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=420)
        if proc.returncode != 0:
            pytest.fail(f".ci/slurm_setup.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    if not _cluster_up():
        pytest.fail("CI=true or MEDTL_SLURM_SETUP=1, but there is no working SLURM controller and it cannot "
                    "be set up here (.ci/slurm_setup.sh needs root and apt-get); MEDTL_SLURM_SETUP=0 skips")


def job_blocks(log: str) -> dict[int, tuple[str, bool]]:
    """Snakemake job id -> (rule, ran locally) from the job descriptions in Snakemake's output."""
    jobs = {}
    for m in re.finditer(r"^(localrule|rule) (\w+):\n((?:    .*\n)+)", log, re.M):
        jobid = re.search(r"^    jobid: (\d+)$", m.group(3), re.M)
        if jobid:
            jobs[int(jobid.group(1))] = (m.group(2), m.group(1) == "localrule")
    return jobs


def scontrol(jobid: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def submissions(log: str) -> dict[int, tuple[str, Path]]:
    """Snakemake job id -> (SLURM job id, SLURM log) of every sbatch submission (the last, if retried)."""
    return {int(job): (slurm_id, Path(path)) for job, slurm_id, path in
            re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.", log)}


@pytest.fixture(scope="module")
def cluster_run(slurm_cluster, tmp_path_factory):
    """The workflow through profiles/slurm, and beside it (the SLURM jobs use one CPU at a time, as
    the node has one GPU) the same workflow run locally."""
    cluster, local = tmp_path_factory.mktemp("slurm"), tmp_path_factory.mktemp("local")
    reference = start_snakemake(local, write_config(local / "config.yaml", CONFIG), cores=1)
    proc = snakemake(cluster, write_config(cluster / "config.yaml", CONFIG), *SLURM_ARGS, check=False)
    log = proc.stdout + proc.stderr
    rc, ref_log = finish(reference, local)
    assert proc.returncode == 0, log[-6000:]
    assert rc == 0, ref_log[-4000:]
    return cluster, local, log


def test_classification_on_slurm_matches_a_local_run(cluster_run):
    cluster, local, log = cluster_run
    run_id = re.search(r"^SLURM run ID: (\S+)$", log, re.M).group(1)
    submitted = submissions(log)
    jobs = job_blocks(log)
    print(f"\nSLURM run {run_id}")
    for job, (slurm_id, path) in sorted(submitted.items()):
        print(f"  {jobs[job][0]}: SLURM job {slurm_id}, log {path}")

    # Compute jobs went to SLURM, the light rules ran here (fetching data needs no compute node).
    assert Counter(jobs[j][0] for j in submitted) == Counter({"prepare_dataset": 1, "train": len(RUNS)})
    ran_here = {rule for j, (rule, local_) in jobs.items() if j not in submitted}
    assert {"fetch_dataset", "report_classification", "all"} <= ran_here
    assert all(local_ for j, (_, local_) in jobs.items() if j not in submitted)
    assert not any(local_ for j, (_, local_) in jobs.items() if j in submitted)

    # SLURM itself knows these jobs (under the run's job name), and nothing else of this run.
    queue = subprocess.run(["squeue", "--states=all", "-h", "--name", run_id, "-o", "%i|%T|%k"],
                           capture_output=True, text=True, check=True).stdout.split()
    states = {i: (state, comment) for i, state, comment in (line.split("|") for line in queue)}
    assert set(states) == {slurm_id for slurm_id, _ in submitted.values()}
    assert all(state == "COMPLETED" for state, _ in states.values()), states
    assert not any(comment.startswith("rule_fetch") for _, comment in states.values())

    for job, (slurm_id, path) in submitted.items():
        info = scontrol(slurm_id)
        assert Path(info["StdOut"]) == path and path.is_file(), info
        assert info["WorkDir"] == str(cluster)
        text = path.read_text()
        assert f"rule {jobs[job][0]}:" in text and "1 of 1 steps (100%) done" in text, text[-2000:]
        if jobs[job][0] == "train":  # the profile's GPU request and first-attempt runtime reached sbatch
            assert info["TimeLimit"] == "02:00:00", info
            assert "gres:gpu:1" in info.get("TresPerJob", "") + info.get("TresPerNode", ""), info
            assert info.get("CpusPerTres") == "gres:gpu:1", info
            assert info.get("MinMemoryNode") == "1500M", info

    for run in RUNS:  # the same numbers as on this machine
        assert_same_results(cluster / "results" / "runs" / run, local / "results" / "runs" / run)
    assert (cluster / "results/report/classification/report.md").is_file()


def test_a_failing_job_is_resubmitted_with_more_runtime(cluster_run):
    """A new l2_sp setting reruns its job, which fails on the node (its checkpoint cannot be written):
    SLURM gets it again with the runtime of the second attempt, and no stale result is left."""
    cluster, _, _ = cluster_run
    config = {**CONFIG, "strategies": {**CONFIG["strategies"], "l2_sp": {"alpha": 0.1, "beta": 0.01}}}
    failing = "synth_derm/vgg_tiny/l2_sp/lr0.001/seed0"
    (cluster / "results" / "checkpoints" / "runs" / failing / "resume.ckpt").mkdir(parents=True)
    proc = snakemake(cluster, write_config(cluster / "retry.yaml", config), *SLURM_ARGS, "--retries", "1",
                     check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    attempts = [slurm_id for slurm_id, path in
                re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.", log)
                if "/rule_train/synth_derm_vgg_tiny_l2_sp_0.001_0/" in path]
    print(f"\nfailing job submitted as SLURM jobs {attempts}")
    assert len(attempts) == 2, log[-6000:]
    limits = [scontrol(i)["TimeLimit"] for i in attempts]
    assert limits == ["02:00:00", "04:00:00"]
    assert all(scontrol(i)["JobState"] == "FAILED" for i in attempts)
    assert not (cluster / "results" / "runs" / failing / "metrics.json").exists()
