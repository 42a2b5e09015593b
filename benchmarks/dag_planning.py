"""Scheduling: how long Snakemake takes to plan the first study (``snakemake -n`` on configs/paper.yaml,
1,728 training jobs and the shared jobs they depend on), and the peak memory of that process, against
the budget (5 s, 300 MB), next to the embedded default's dry run (the fixed start-up cost: Python,
Snakemake, config checks).

Printed, measured side by side in this run (dry runs in turns, median): seconds, peak resident memory,
jobs, the ratio to the budget, the marginal planning cost per job, and the jobs per rule, which shows
that shared work (dataset fetch and preparation, weights, cached features) is one job per unit.
``--against DIR`` also plans the same configs with the workflow of another checkout (e.g. an older
commit: ``git archive <commit> | tar -x -C /tmp/before``), in the same turns, and prints the ratios.
With ``--profile``, the share of the workflow's own helper functions (rules/*.smk) in the plan.

    python benchmarks/dag_planning.py
    python benchmarks/dag_planning.py --against /tmp/before
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

BUDGET_S = 5.0
BUDGET_MB = 300.0


# Runs snakemake and, at exit, writes the process's peak resident memory (VmHWM, KB) to argv[1]. Not the
# parent's getrusage: a child's ru_maxrss counts the memory of the process it was forked from (this one,
# with PyTorch imported) before it ran snakemake.
PEAK = """import atexit, sys
def peak(path=sys.argv[1]):
    with open('/proc/self/status') as status, open(path, 'w') as out:
        out.write(next(line.split()[1] for line in status if line.startswith('VmHWM:')))
atexit.register(peak)
sys.argv = ['snakemake', *sys.argv[2:]]
from snakemake.cli import main
main()
"""


def dry_run(configfile: Path, workdir: Path, profile: Path | None = None, repo: Path = REPO) -> tuple[str, float]:
    """The dry run's output and the peak resident memory of its process, MB (Linux; NaN elsewhere)."""
    args = ["-n", "--quiet", "rules", "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir),
            "--cores", "1", "--configfile", str(configfile)]
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak_kb"
        if profile:
            cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "snakemake", *args]
        elif Path("/proc/self/status").exists():
            cmd = [sys.executable, "-c", PEAK, str(peak_file), *args]
        else:
            cmd = [sys.executable, "-m", "snakemake", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
        mb = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("nan")
    if proc.returncode:
        raise RuntimeError(f"dry run failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr, mb


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
    ap.add_argument("--against", type=Path, help="another checkout of this workflow, planned in the same turns")
    args = ap.parse_args(argv)
    header("DAG planning: snakemake -n on the first study's config")
    checkouts = {"": REPO}
    if args.against:
        checkouts[f" [{args.against}]"] = args.against.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out, peak = {}, {}

        def plan(name, repo, configfile):
            def run():
                out[name], mb = dry_run(repo / configfile, tmp / re.sub(r"\W+", "_", name), repo=repo)
                peak.setdefault(name, []).append(mb)
            return run

        variants = {}
        for suffix, repo in checkouts.items():
            variants[f"embedded default (config.yaml){suffix}"] = plan(f"default{suffix}", repo, "config.yaml")
            if not args.quick:
                variants[f"first study (configs/paper.yaml){suffix}"] = plan(f"paper{suffix}", repo,
                                                                             "configs/paper.yaml")
        times = interleaved(variants, repeats=1 if args.quick else args.repeats)
        for k, v in times.items():
            key = ("paper" if k.startswith("first") else "default") + k[k.index(")") + 1:]
            print(f"   {k:36s} {spread(v)}, peak memory median {median(peak[key]):.0f} MB")
        results = {}
        for suffix in checkouts:
            for key, label in (("default", "embedded default (config.yaml)"),
                               ("paper", "first study (configs/paper.yaml)")):
                if key + suffix not in out:
                    continue
                counts = job_counts(out[key + suffix])
                print(f"   {label}{suffix}: {counts.get('total', 0)} jobs: "
                      + ", ".join(f"{r} {c}" for r, c in counts.items() if r != "total"))
                results[key + suffix] = {"seconds": median(times[label + suffix]), "jobs": counts,
                                         "peak_mb": median(peak[key + suffix])}
        if "paper" in results:
            t_paper, t_default = results["paper"]["seconds"], results["default"]["seconds"]
            n_paper, n_default = results["paper"]["jobs"]["total"], results["default"]["jobs"]["total"]
            mb = results["paper"]["peak_mb"]
            print(f"   RATIO first study dry run / {BUDGET_S:.0f} s budget = {t_paper / BUDGET_S:.2f} "
                  f"({t_paper:.1f} s for {n_paper} jobs); peak memory / {BUDGET_MB:.0f} MB budget = "
                  f"{mb / BUDGET_MB:.2f} ({mb:.0f} MB)")
            print(f"   marginal planning cost: {1000 * (t_paper - t_default) / max(1, n_paper - n_default):.1f} ms per job "
                  f"(start-up {t_default:.1f} s)")
        for suffix in list(checkouts)[1:]:
            for key in ("default", "paper"):
                if key + suffix in results:
                    other, this = results[key + suffix], results[key]
                    print(f"   RATIO {key} dry run, {args.against} / this checkout: time "
                          f"{other['seconds'] / this['seconds']:.2f}x ({other['seconds']:.1f} s vs {this['seconds']:.1f} s),"
                          f" peak memory {other['peak_mb'] / this['peak_mb']:.2f}x ({other['peak_mb']:.0f} MB vs "
                          f"{this['peak_mb']:.0f} MB)")
        if args.profile and not args.quick:
            import pstats

            prof = tmp / "plan.prof"
            t0 = time.perf_counter()
            dry_run(REPO / "configs" / "paper.yaml", tmp / "profiled", profile=prof)
            total = time.perf_counter() - t0
            stats = pstats.Stats(str(prof))
            own = sum(v[3] for k, v in stats.stats.items()  # cumulative time of top-level helper calls
                      if k[0].endswith(".smk") and k[2] not in ("<module>",) and not k[2].startswith("<lambda>"))
            print(f"   profile: workflow helper functions (rules/*.smk) ~{own:.2f} s of {total:.1f} s profiled "
                  "(upper bound: nested calls counted twice)")
    return results


if __name__ == "__main__":
    main()
