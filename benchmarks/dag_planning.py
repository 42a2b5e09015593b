"""Scheduling: how long Snakemake takes to plan the first study (``snakemake -n`` on configs/paper.yaml,
1,728 training jobs and the shared jobs they depend on), against the 20 s budget, next to the
embedded default's dry run (the fixed start-up cost: Python, Snakemake, config checks).

Printed, measured side by side in this run (dry runs in turns, median): seconds, jobs, the
ratio to the budget, the marginal planning cost per job, and the jobs per rule, which shows that
shared work (dataset fetch and preparation, weights, cached features) is one job per unit.
With ``--profile``, the share of the workflow's own helper functions (rules/*.smk) in the plan.

    python benchmarks/dag_planning.py
    python benchmarks/dag_planning.py --quick     # the embedded default only
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, header, interleaved, median, spread

BUDGET_S = 20.0


def dry_run(configfile: Path, workdir: Path, profile: Path | None = None) -> str:
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "snakemake", "-n", "--quiet", "rules", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--cores", "1", "--configfile", str(configfile)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"dry run failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def job_counts(text: str) -> dict[str, int]:
    counts = {}
    table = text.split("Job stats:")[-1]
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also profile one paper dry run")
    ap.add_argument("--quick", action="store_true", help="the embedded default only, once")
    args = ap.parse_args(argv)
    header("DAG planning: snakemake -n on the first study's config")
    paper = REPO / "configs" / "paper.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = {}

        def plan(name, configfile):
            def run():
                out[name] = dry_run(configfile, tmp / name)
            return run

        variants = {"embedded default (config.yaml)": plan("default", REPO / "config.yaml")}
        if not args.quick:
            variants["first study (configs/paper.yaml)"] = plan("paper", paper)
        times = interleaved(variants, repeats=1 if args.quick else args.repeats)
        for k, v in times.items():
            print(f"   {k:36s} {spread(v)}")
        results = {}
        for key, label in (("default", "embedded default (config.yaml)"), ("paper", "first study (configs/paper.yaml)")):
            if key not in out:
                continue
            counts = job_counts(out[key])
            print(f"   {label}: {counts.get('total', 0)} jobs: "
                  + ", ".join(f"{r} {c}" for r, c in counts.items() if r != "total"))
            results[key] = {"seconds": median(times[label]), "jobs": counts}
        if "paper" in results:
            t_paper, t_default = results["paper"]["seconds"], results["default"]["seconds"]
            n_paper, n_default = results["paper"]["jobs"]["total"], results["default"]["jobs"]["total"]
            print(f"   RATIO first study dry run / {BUDGET_S:.0f} s budget = {t_paper / BUDGET_S:.2f} "
                  f"({t_paper:.1f} s for {n_paper} jobs)")
            print(f"   marginal planning cost: {1000 * (t_paper - t_default) / max(1, n_paper - n_default):.1f} ms per job "
                  f"(start-up {t_default:.1f} s)")
        if args.profile and not args.quick:
            import pstats

            prof = tmp / "plan.prof"
            t0 = time.perf_counter()
            dry_run(paper, tmp / "profiled", profile=prof)
            total = time.perf_counter() - t0
            stats = pstats.Stats(str(prof))
            own = sum(v[3] for k, v in stats.stats.items()  # cumulative time of top-level helper calls
                      if k[0].endswith(".smk") and k[2] not in ("<module>",) and not k[2].startswith("<lambda>"))
            print(f"   profile: workflow helper functions (rules/*.smk) ~{own:.2f} s of {total:.1f} s profiled "
                  "(upper bound: nested calls counted twice)")
    return results


if __name__ == "__main__":
    main()
