"""The workflow is as Snakemake's linter wants it, on the embedded default and on the first study's config,
and every rule names its software (a conda environment in envs/), its log and its benchmark file."""
from __future__ import annotations

import re
import subprocess

import pytest

from workflow_helpers import REPO, SNAKEMAKE


@pytest.mark.parametrize("config", [None, "configs/paper.yaml"], ids=["embedded-default", "paper"])
def test_snakemake_lint_finds_nothing(config):
    # from the repository, as a user runs it: the embedded default is read from the working directory
    cmd = [*SNAKEMAKE, "--lint", *(["--configfile", config] if config else [])]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Lints for" not in out, out[-4000:]


def rule_blocks():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", smk.read_text(), re.M):
            yield smk.name, m.group(1), m.group(2)


def test_every_rule_has_conda_log_and_benchmark():
    rules = list(rule_blocks())
    assert len(rules) >= 17
    for smk, name, body in rules:
        for directive in ("log", "benchmark", "conda"):
            assert re.search(rf"^    {directive}:\n", body, re.M), f"{smk}: rule {name} has no {directive}:"
        env = re.search(r'^    conda:\n\s+"\.\./(envs/[\w.-]+\.yaml)"', body, re.M)
        assert env and (REPO / env.group(1)).is_file(), f"{smk}: rule {name}'s conda environment is not in envs/"
