"""Helpers for the tests that run Snakemake as a user or a crash would: in the background, killed,
copied, with profiles; and for comparing the results of two runs exactly."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd

from workflow_helpers import REPO, SNAKEMAKE, scheduled_jobs

PROFILES = REPO / "profiles"


def snakemake_cmd(workdir: Path, configfile: Path, *args: str, cores: int | None = 2) -> list[str]:
    """The command tests/workflow_helpers.snakemake runs (``cores=None`` leaves --cores to a profile)."""
    return [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(configfile), *(["--cores", str(cores)] if cores else []), *args]


def start_snakemake(workdir: Path, configfile: Path, *args: str, cores: int | None = 2) -> subprocess.Popen:
    """Snakemake in the background, in its own process group, its output in ``workdir/snakemake.out``."""
    out = open(workdir / "snakemake.out", "w")
    return subprocess.Popen(snakemake_cmd(workdir, configfile, *args, cores=cores), stdout=out,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, workdir: Path, timeout: float = 900) -> tuple[int, str]:
    """Wait for a background Snakemake; its return code and output."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"snakemake in {workdir} ran for more than {timeout} s")
    return rc, (workdir / "snakemake.out").read_text()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: Linux only)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def job_process(snakemake_pid: int, script: str, timeout: float = 120) -> int:
    """The pid of the running job whose rule script is ``script`` (e.g. "train.py") below Snakemake."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [pid for pid in descendants(snakemake_pid)
                 if script in cmdline(pid) and "/.snakemake/scripts/" in cmdline(pid)]
        # the python process itself, not a shell that wraps it
        found = [pid for pid in found if not set(descendants(pid)) & set(found)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no running job with script {script} below pid {snakemake_pid}")


def copy_workdir(src: Path, dst: Path) -> Path:
    """A copy of a finished (or crashed) run, mtimes included: Snakemake sees the same state."""
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst


def comparable_metrics(path: Path) -> str:
    """A metrics.json without its wall time, as canonical text: exact, and NaN equals NaN."""
    from medtl.training.job import MACHINE_DEPENDENT  # seconds, training seconds, peak memory

    data = json.loads(Path(path).read_text())
    for key in MACHINE_DEPENDENT:
        data.pop(key, None)
    return json.dumps(data, sort_keys=True)


def history_without_time(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns="seconds")


def assert_same_results(run_a: Path, run_b: Path) -> None:
    """Two job output folders hold exactly the same results (metrics, per-epoch history, hyperparameters)."""
    assert comparable_metrics(run_a / "metrics.json") == comparable_metrics(run_b / "metrics.json")
    pd.testing.assert_frame_equal(history_without_time(run_a / "history.csv"),
                                  history_without_time(run_b / "history.csv"), check_exact=True)
    assert json.loads((run_a / "hparams.json").read_text()) == json.loads((run_b / "hparams.json").read_text())


def mtimes(paths) -> dict[str, int]:
    return {str(p): Path(p).stat().st_mtime_ns for p in paths}


def downstream_of_training(workdir: Path, configfile: Path) -> set[str]:
    """The aggregate rules (reports, ``all``: jobs without wildcards) that rerun when training results
    change, read from a dry run that forces every training job of a finished run. New report rules
    are picked up without editing the tests that check which jobs a change schedules."""
    jobs = scheduled_jobs(workdir, configfile, "--forcerun", "train")
    assert any(rule == "train" for rule, _ in jobs)
    return {rule for rule, wildcards in jobs if not wildcards}


def split_jobs(jobs) -> tuple[list[tuple[str, str]], set[str]]:
    """(sorted per-item jobs with wildcards, set of aggregate rules without wildcards)."""
    return sorted(j for j in jobs if j[1]), {rule for rule, wildcards in jobs if not wildcards}
