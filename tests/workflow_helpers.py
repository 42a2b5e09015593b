"""Running Snakemake on a config from the tests, and reading which jobs a dry run schedules."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, configfile: Path, *args: str, check: bool = True,
              snakefile: Path | None = None) -> subprocess.CompletedProcess:
    """Snakemake on ``configfile`` in ``workdir``, with this repository's Snakefile or ``snakefile`` (a copy of the
    workflow, e.g. with an edited declaration)."""
    cmd = [*SNAKEMAKE, "--snakefile", str(snakefile or REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def scheduled_jobs(workdir: Path, configfile: Path, *targets: str,
                   snakefile: Path | None = None) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would execute."""
    proc = snakemake(workdir, configfile, "-n", *targets, snakefile=snakefile)
    jobs: list[list[str]] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        rule = re.match(r"^(?:local)?rule (\w+):", line)
        if rule:
            jobs.append([rule.group(1), ""])
        wildcards = re.match(r"^\s+wildcards: (.*)$", line)
        if wildcards and jobs:
            jobs[-1][1] = wildcards.group(1)
    return [tuple(job) for job in jobs]


def tiny_config(strategies: dict | None = None, **overrides) -> dict:
    """A run small enough to finish in seconds: one dataset, one architecture without pretraining,
    one learning rate, one seed, one epoch (plus ``overrides`` of top-level sections)."""
    config = {
        "results": "results",
        "seeds": [0],
        "learning_rates": [0.001],
        "datasets": {"synth_derm": {"options": {"n": 60, "size": 36}}},
        "architectures": {"vgg_tiny": {"weights": {"type": "none"}}},
        "strategies": strategies or {"ft": {}, "l2_sp": {"alpha": 0.01, "beta": 0.01}},
        "training": {"epochs": 1, "batch_size": 16, "patience": 1},
    }
    return {**config, **overrides}
