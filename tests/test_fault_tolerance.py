"""Fault tolerance of the workflow, end to end through Snakemake: a training job killed mid-run
resumes from its checkpoint with the same result as an uninterrupted run; a failed job leaves
no output Snakemake would take as finished and touches no other job's results; the report
refuses missing or malformed metrics instead of dropping them.

MEDTL_TEST_DISABLE_RESUME=1 deletes the checkpoint between the kill and the rerun, as a trainer
without resume would behave: test_killed_training_job_resumes_from_its_checkpoint then fails,
which shows that it checks the resume and not only the (deterministic) final numbers.
"""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from run_helpers import (PROFILES, assert_same_results, copy_workdir, downstream_of_training, finish,
                         job_process, mtimes, split_jobs, start_snakemake)
from workflow_helpers import scheduled_jobs, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

EPOCHS = 12
# One training job whose epochs take a noticeable time on a small CPU (about 0.2-0.5 s each), so
# that it can be killed after its second epoch with most of its epochs still to run. SPFT keeps
# the most state across epochs: schedule, EMA weights, class weights, progressive unfreezing.
KILL = {
    "results": "results",
    "seeds": [0],
    "learning_rates": [0.001],
    "datasets": {"synth_derm": {"options": {"n": 600, "size": 56}}},
    "architectures": {"vgg_tiny": {"weights": {"type": "none"}, "preprocess": {"resize": 56, "crop": 48}}},
    "strategies": {"spft": {"head_epochs": 1, "top_k": 2, "ema_decay": 0.9}},
    "training": {"epochs": EPOCHS, "batch_size": 16, "patience": EPOCHS},
    "report": {"reference": "spft"},
}
KILL_RUN = "synth_derm/vgg_tiny/spft/lr0.001/seed0"
OUTPUTS = ("metrics.json", "history.csv", "hparams.json")


def run_dir(workdir: Path, run: str = KILL_RUN) -> Path:
    return workdir / "results" / "runs" / run


def checkpoint(workdir: Path, run: str = KILL_RUN) -> Path:
    return workdir / "results" / "checkpoints" / "runs" / run / "resume.ckpt"


def train_log(workdir: Path, run: str = KILL_RUN) -> str:
    return (workdir / "results" / "logs" / "train" / f"{run}.log").read_text()


def checkpoint_epoch(path: Path) -> int | None:
    """The last finished epoch a checkpoint holds (written atomically, so never half-read)."""
    if not path.exists():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # replaced while we read it
        return None


def run_until_killed(workdir: Path, *, whole_run: bool) -> int:
    """Start the KILL workflow and SIGKILL it once the checkpoint after epoch 2 is on disk: only the
    training job's process, or (``whole_run``) Snakemake and everything it started, as a crash of the
    machine would. Returns the last finished epoch (0-based) that the checkpoint holds."""
    cfg = write_config(workdir / "config.yaml", KILL)
    proc = start_snakemake(workdir, cfg)
    job = job_process(proc.pid, "train.py", timeout=300)
    deadline = time.monotonic() + 300
    while (checkpoint_epoch(checkpoint(workdir)) or 0) < 1:
        assert proc.poll() is None and time.monotonic() < deadline, \
            f"no checkpoint of epoch 2 appeared:\n{(workdir / 'snakemake.out').read_text()[-3000:]}"
        time.sleep(0.05)
    if whole_run:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(job, signal.SIGKILL)
    rc, out = finish(proc, workdir)
    assert rc != 0, "Snakemake did not notice the kill"
    epoch = checkpoint_epoch(checkpoint(workdir))
    assert epoch is not None and 1 <= epoch < EPOCHS - 1, \
        f"the job was not killed mid-run (checkpoint epoch {epoch}); make its epochs longer"
    for name in OUTPUTS:  # nothing that could be taken for a finished job
        assert not (run_dir(workdir) / name).exists(), f"{name} survived the kill"
    if not whole_run:
        assert "Error in rule train" in out and "died with <Signals.SIGKILL: 9>" in out, out[-3000:]
    return epoch


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """An uninterrupted reference run, and the same workflow with its training job killed after epoch 2
    (both run at once: a second process on the CPU changes timings, never results)."""
    reference = tmp_path_factory.mktemp("reference")
    ref_proc = start_snakemake(reference, write_config(reference / "config.yaml", KILL), cores=1)
    workdir = tmp_path_factory.mktemp("killed")
    epoch = run_until_killed(workdir, whole_run=False)
    rc, out = finish(ref_proc, reference)
    assert rc == 0, out[-4000:]
    assert "resumed" not in train_log(reference)
    return SimpleNamespace(reference=reference, workdir=workdir, epoch=epoch)


def rerun_log(workdir: Path) -> str:
    """The training log of the last attempt (Snakemake clears a job's log before running it)."""
    text = train_log(workdir)
    starts = [m.start() for m in re.finditer(r"^\[train\] synth_derm ", text, re.M)]
    return text[starts[-1]:] if starts else text


def assert_resumed(workdir: Path, epoch: int) -> None:
    """The rerun continued after ``epoch`` (0-based) instead of starting over."""
    log = rerun_log(workdir)
    ckpt = "results/checkpoints/runs/" + KILL_RUN + "/resume.ckpt"
    assert f"[train] resumed from {ckpt} after epoch {epoch}" in log, f"the rerun did not resume:\n{log}"
    trained = [int(e) for e in re.findall(rf"^\[train\] epoch (\d+)/{EPOCHS} ", log, re.M)]
    assert trained == list(range(epoch + 2, EPOCHS + 1)), f"the rerun trained epochs {trained}"


def test_killed_training_job_resumes_from_its_checkpoint(killed, tmp_path):
    workdir = copy_workdir(killed.workdir, tmp_path / "run")
    if os.environ.get("MEDTL_TEST_DISABLE_RESUME") == "1":
        checkpoint(workdir).unlink()  # what a trainer without resume would do: start over
    snakemake(workdir, workdir / "config.yaml")
    assert_resumed(workdir, killed.epoch)
    assert_same_results(run_dir(workdir), run_dir(killed.reference))
    assert not checkpoint(workdir).exists()  # a finished job removes its checkpoint


def test_the_resume_check_catches_a_restart_from_scratch(killed, tmp_path):
    """Without its checkpoint the rerun starts over, and the check above fails; the final numbers
    alone would not show it, as a restart from scratch gives the same deterministic result."""
    workdir = copy_workdir(killed.workdir, tmp_path / "run")
    checkpoint(workdir).unlink()
    snakemake(workdir, workdir / "config.yaml")
    with pytest.raises(AssertionError, match="did not resume"):
        assert_resumed(workdir, killed.epoch)
    trained = re.findall(rf"^\[train\] epoch (\d+)/{EPOCHS} ", rerun_log(workdir), re.M)
    assert trained == [str(e) for e in range(1, EPOCHS + 1)]
    assert_same_results(run_dir(workdir), run_dir(killed.reference))


def test_crash_of_snakemake_itself_resumes_after_unlock(killed, tmp_path):
    """Snakemake and its job killed at once (a lost login session, a crashed workstation): the
    directory stays locked until `--unlock`; then the workstation profile (rerun-incomplete) resumes."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    epoch = run_until_killed(workdir, whole_run=True)
    cfg = workdir / "config.yaml"
    locked = snakemake(workdir, cfg, check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(workdir, cfg, "--unlock")
    snakemake(workdir, cfg, "--profile", str(PROFILES / "workstation"))
    assert_resumed(workdir, epoch)
    assert_same_results(run_dir(workdir), run_dir(killed.reference))


# -- failed jobs and the report ------------------------------------------------------------------
TINY = tiny_config({"ft": {}, "lp": {}, "l2_sp": {"alpha": 0.01, "beta": 0.01}})


def tiny_run(strategy: str, seed: int = 0) -> str:
    return f"synth_derm/vgg_tiny/{strategy}/lr0.001/seed{seed}"


@pytest.fixture(scope="module")
def finished_tiny(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, write_config(workdir / "config.yaml", TINY))
    return workdir


@pytest.fixture(scope="module")
def reports(finished_tiny):
    """The aggregate rules (reports, all) that depend on training results."""
    downstream = downstream_of_training(finished_tiny, finished_tiny / "config.yaml")
    assert "report_classification" in downstream
    return downstream


def run_outputs(workdir: Path, runs) -> list[Path]:
    return [run_dir(workdir, r) / name for r in runs for name in OUTPUTS]


def test_failed_job_leaves_no_output_and_others_are_untouched(finished_tiny, reports, tmp_path):
    workdir = copy_workdir(finished_tiny, tmp_path / "run")
    assert scheduled_jobs(workdir, workdir / "config.yaml") == []  # the copy is a finished run
    kept = run_outputs(workdir, [tiny_run("ft"), tiny_run("lp")])
    before = mtimes(kept)

    # A second seed (three new jobs) and a new l2_sp setting (reruns l2_sp seed 0, whose old results
    # are on disk). l2_sp seed 0 fails mid-run: its checkpoint cannot be written (a directory is in
    # the way, as a full or broken disk would do).
    config = copy.deepcopy(TINY)
    config["seeds"] = [0, 1]
    config["strategies"]["l2_sp"]["alpha"] = 0.1
    cfg = write_config(workdir / "config.yaml", config)
    failing = tiny_run("l2_sp")
    (checkpoint(workdir, failing)).mkdir(parents=True)
    proc = snakemake(workdir, cfg, "--keep-going", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error in rule train" in out and "Is a directory" in train_log(workdir, failing)

    for name in OUTPUTS:  # the stale results of the earlier run are gone too, not taken as current
        assert not (run_dir(workdir, failing) / name).exists(), name
    for strategy in ("ft", "lp", "l2_sp"):  # --keep-going: the independent new jobs all finished
        assert (run_dir(workdir, tiny_run(strategy, seed=1)) / "metrics.json").is_file()
    assert mtimes(kept) == before  # jobs that did not need to run were not touched

    # Once the cause is gone, exactly the failed job and the report are left to run.
    checkpoint(workdir, failing).rmdir()
    jobs, aggregates = split_jobs(scheduled_jobs(workdir, cfg))
    assert jobs == [("train", "dataset=synth_derm, arch=vgg_tiny, strategy=l2_sp, lr=0.001, seed=0")]
    assert aggregates == reports
    snakemake(workdir, cfg)
    assert mtimes(kept) == before
    table = (workdir / "results/report/classification/all_runs.csv").read_text()
    assert len(table.strip().splitlines()) == 1 + 6


REPORT_OUTPUTS = ("all_runs.csv", "selected.csv", "report.md")


@pytest.mark.parametrize("damage,message", [
    ("{not json", "not valid JSON"),
    ("drop_test", "lacks required key(s) ['test']"),
    ("wrong_seed", "contents do not match its path"),
])
def test_report_refuses_malformed_metrics(finished_tiny, tmp_path, damage, message):
    workdir = copy_workdir(finished_tiny, tmp_path / "run")
    bad = run_dir(workdir, tiny_run("lp")) / "metrics.json"
    if damage == "drop_test":
        data = json.loads(bad.read_text())
        del data["test"]
        bad.write_text(json.dumps(data))
    elif damage == "wrong_seed":
        data = json.loads(bad.read_text())
        data["seed"] = 7
        bad.write_text(json.dumps(data))
    else:
        bad.write_text(damage)
    proc = snakemake(workdir, workdir / "config.yaml", "--forcerun", "report_classification", "--keep-going",
                     check=False)
    assert proc.returncode != 0
    log = (workdir / "results/logs/report_classification.log").read_text()
    assert "results/runs/synth_derm/vgg_tiny/lp/lr0.001/seed0/metrics.json" in log and message in log, log
    assert "Error in rule report_classification" in proc.stdout + proc.stderr
    for name in REPORT_OUTPUTS:  # no report that silently leaves the job out, and no stale one
        assert not (workdir / "results/report/classification" / name).exists(), name


def test_a_missing_metrics_file_is_recomputed_before_the_report(finished_tiny, reports, tmp_path):
    """A results file deleted after the report was built: Snakemake leaves the up-to-date report alone,
    but once the report is rebuilt, the job runs again first; the report never shrinks."""
    workdir = copy_workdir(finished_tiny, tmp_path / "run")
    (run_dir(workdir, tiny_run("lp")) / "metrics.json").unlink()
    jobs, aggregates = split_jobs(scheduled_jobs(workdir, workdir / "config.yaml", "--forcerun",
                                                 "report_classification"))
    assert jobs == [("train", "dataset=synth_derm, arch=vgg_tiny, strategy=lp, lr=0.001, seed=0")]
    assert aggregates == reports
