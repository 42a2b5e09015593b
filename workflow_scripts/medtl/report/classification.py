"""Entry point: every training job's metrics.json -> the study's classification tables and figures.

Written to the files of the report rule (declared in :mod:`medtl.report.outputs`; each atomically,
``report.md`` last), relative to ``results/report/classification``:

- ``all_runs.csv``                 one row per job (nothing dropped: rows == metrics files)
- ``per_lr.csv``                   mean / SE over seeds for every (dataset, arch, strategy, lr)
- ``selected.csv``                 the lr chosen on mean validation primary metric, with val/test mean and SE
- ``cost.csv|.md``                 per (dataset, arch, strategy) at its selected lr: test primary metric beside
                                   trainable parameters (% of the model), seconds per job, peak memory
- ``tables/{dataset}.csv|.md``     strategies x (arch, metric) "mean ± se" on test, best marked
- ``relative_improvement.csv|.md`` % change of the test primary metric over the reference strategy
- ``best_method.csv|.md``          best strategy per dataset and architecture, and its gain
- ``effectiveness.csv|.md``        per strategy: pairs where it beats the reference by > threshold
- ``table11.csv|.md``              the paper's Table 11: best (architecture, strategy) per dataset, gain over the
                                   same architecture's reference
- ``table12.csv|.md``              the paper's Table 12: per strategy and architecture, datasets where it beats
                                   the reference by > threshold; total and effectiveness (%)
- ``figures/relative_improvement_{dataset}.png`` and ``figures/relative_improvement_all.png``
- ``intervals.csv``               bootstrap interval of every test cell (when the jobs kept predictions.parquet;
                                   the tables then get ``*_ci_low`` / ``*_ci_high`` columns and significance counts)
- ``paired_comparison.csv|.md``   each strategy against the reference: difference, interval, p, Holm-adjusted p; then,
                                   for the strategies trained from scratch, whether transfer helps
- ``tables/{dataset}_intervals.md`` the intervals of a dataset's cells, "mean [low, high]"
- ``figures/forest_{dataset}.png`` relative difference from the reference with its interval (medtl.report.significance)
- ``verdict_friedman.csv|.md``, ``verdict_bayes.csv|.md``, ``verdict_modality.csv|.md``,
  ``figures/critical_difference.png``  one verdict across datasets (:mod:`medtl.report.verdict`)
- ``report.md``                    all tables and figures in one document, each section headed by the caption that
                                   Snakemake's HTML report shows beside the same result (``report/classification/``,
                                   :mod:`medtl.report.document`)
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from medtl.io import atomic_path

from . import figures, significance, tables, verdict
from .document import caption
from .collect import Runs, check_complete, collect_runs
from .declaration import REPORT
from .outputs import ReportFiles, report_files
from .select import UNDEFINED, aggregate, select_lr

__all__ = ["build_report", "check_complete"]


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def build_report(metric_files: list[str], out_dir: "str | ReportFiles", reference: str = REPORT["reference"],
                 threshold: float = REPORT["effective_threshold"],
                 strategy_order: list[str] | None = None, arch_order: list[str] | None = None,
                 *, expected: int | None = None, stats: dict | None = None,
                 scratch: list[str] | None = None) -> dict[str, str]:
    """Build every table and figure; return {path relative to the report's folder: path written}.

    ``out_dir``: the report rule's files (:class:`medtl.report.outputs.ReportFiles`), or a folder.

    ``reference``: the strategy the others are compared with (must have runs).
    ``threshold``: relative gain (0.001 = 0.1%) a strategy needs over the reference to count as effective.
    ``strategy_order`` / ``arch_order``: row/column order (names without runs are skipped; names with runs
    but not listed follow, sorted); without them, names are sorted. Datasets are sorted.
    ``expected``: if given, the number of metrics files there must be (see ``check_complete``).
    ``stats``: the config's report section (bootstrap_resamples, confidence_level, bootstrap_seed) for the
    intervals and paired tests, computed when the jobs kept predictions.parquet beside metrics.json.
    ``scratch``: the strategies trained from the architecture's random initialisation (``random_init``: scratch),
    the reference that says whether transfer helps. They are rows of the per-dataset tables, the intervals, the
    relative improvement and its figures, and are compared with the reference in the paired tests (a Holm family
    of their own, in a table of their own: does transfer help?); they are not ranked among the fine-tuning
    strategies: the best method, effectiveness and the paper's Tables 11 and 12 leave them out (the paper has no
    such row). As the reference itself, scratch is an ordinary strategy: every other one is compared with it.
    Raises ValueError (naming the file) for a missing, malformed or duplicate metrics file.
    """
    files = [str(f) for f in metric_files]
    if expected is not None:
        check_complete(files, expected)
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold should be a number >= 0, got {threshold!r}")
    from medtl.metrics import HIGHER_IS_BETTER

    runs = collect_runs(files)
    lower = [m for m in runs.metrics if not HIGHER_IS_BETTER.get(m, True)]
    if lower:
        raise ValueError(f"the report assumes higher-is-better metrics; {lower} are not")

    t = runs.table
    datasets = sorted(set(t["dataset"]))
    archs = tables.ordered(t["arch"], arch_order)
    strategies = tables.ordered(t["strategy"], strategy_order)
    if reference not in strategies:
        raise ValueError(f"reference strategy '{reference}' has no runs; strategies with runs: {strategies}")
    order = {"dataset": datasets, "arch": archs, "strategy": strategies}
    # trained from scratch: shown and tested against the reference, never ranked among the fine-tuning strategies
    scratch = [s for s in strategies if s in set(scratch or ()) and s != reference]
    ranked = [s for s in strategies if s not in scratch]

    def sort(df: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
        keys = [k for k in order if k in df]
        df = df.sort_values([*keys, *extra], key=lambda c: c.map({v: i for i, v in enumerate(order[c.name])})
                            if c.name in order else c, kind="stable")
        return df.reset_index(drop=True)

    files = report_files("classification", out_dir)
    written: dict[str, str] = {}

    def put(rel_path: str, obj) -> None:
        path = files(rel_path)
        if isinstance(obj, pd.DataFrame):
            _write_csv(obj, path)
        else:
            _write_text(obj, path)
        written[rel_path] = str(path)

    all_runs = sort(t, ("lr", "seed"))
    put("all_runs.csv", all_runs)
    per_lr = sort(aggregate(runs), ("lr",))
    put("per_lr.csv", per_lr)
    selected = sort(select_lr(per_lr))
    put("selected.csv", selected)
    cost = sort(tables.cost_table(all_runs, selected))  # what each strategy costs beside its score
    cost_md = tables.cost_markdown(cost)
    put("cost.csv", cost)
    put("cost.md", cost_md)
    sig = significance.analyse(runs, selected, reference, significance.Resampling.from_config(stats), scratch=scratch)

    dataset_md = {}
    for ds in datasets:
        metrics = runs.dataset_metrics[ds]
        table = tables.dataset_table(selected, ds, archs, strategies, metrics)
        if sig is not None:
            table = significance.add_interval_columns(table, sig.intervals, ds, archs, metrics)
        seeds = selected.loc[selected["dataset"] == ds, "n_seeds"]
        n_seeds = str(seeds.iloc[0]) if seeds.nunique() == 1 else f"{seeds.min()}-{seeds.max()}"
        dataset_md[ds] = (tables.dataset_markdown(table, ds, archs, metrics, runs.primary[ds], n_seeds)
                          + undefined_markdown(runs, ds, "test"))
        put(f"tables/{ds}.csv", table)
        put(f"tables/{ds}.md", dataset_md[ds])

    rel = sort(tables.relative_improvement(selected, reference, threshold))
    rel_md = tables.relative_markdown(rel, datasets, archs, strategies, reference, threshold)
    put("relative_improvement.csv", rel)
    put("relative_improvement.md", rel_md)

    best = tables.best_method(rel, datasets, archs, ranked)
    if sig is not None:
        best = significance.flag_best(best, sig.paired, "best_strategy")
    best_md = tables.best_markdown(best, reference) + not_ranked(scratch, reference)
    put("best_method.csv", best)
    put("best_method.md", best_md)

    eff = tables.effectiveness(rel, ranked, reference, threshold)
    if sig is not None:
        eff = significance.add_counts(eff, sig.paired, ranked, reference)
    eff_md = tables.effectiveness_markdown(eff, reference, threshold) + not_ranked(scratch, reference)
    put("effectiveness.csv", eff)
    put("effectiveness.md", eff_md)

    # the paper's Tables 11 and 12, by the same functions the published report feeds the paper's Tables 3-10
    scores = main_scores(rel)
    scores = scores[~scores["strategy"].isin(scratch)].reset_index(drop=True)  # the paper has no scratch row
    t11 = tables.best_per_dataset(scores, reference, datasets, archs, ranked)
    if sig is not None:
        t11 = significance.flag_best(t11, sig.paired, "strategy")
    t11_md = tables.table11_markdown(t11, reference) + not_ranked(scratch, reference)
    put("table11.csv", t11)
    put("table11.md", t11_md)
    t12 = tables.effectiveness_counts(scores, reference, threshold, datasets, archs, ranked)
    if sig is not None:
        t12 = significance.add_table12_counts(t12, sig.paired, archs, reference)
    t12_md = tables.table12_markdown(t12, archs, reference, threshold) + not_ranked(scratch, reference)
    put("table12.csv", t12)
    put("table12.md", t12_md)

    figure_notes = {}  # what each figure leaves out, and why: under the figure and in report.md
    for ds in datasets:
        name = f"figures/relative_improvement_{ds}.png"
        figure_notes[ds] = figures.dataset_bars(rel, ds, archs, strategies, reference, files(name))
        written[name] = str(files(name))
    name = "figures/relative_improvement_all.png"
    figure_notes["all"] = figures.overview_heatmap(rel, datasets, archs, strategies, reference, files(name))
    written[name] = str(files(name))
    if sig is not None:
        put("intervals.csv", sort(sig.intervals, ("metric",)))
        put("paired_comparison.csv", sort(sig.paired))
        put("paired_comparison.md", significance.paired_markdown(sort(sig.paired), reference, scratch))
        for ds in datasets:
            put(f"tables/{ds}_intervals.md", significance.interval_markdown(sig.intervals, ds, archs, strategies,
                                                                           runs.dataset_metrics[ds]))
            name = f"figures/forest_{ds}.png"
            significance.forest_plot(sig.paired, ds, archs, strategies, reference, files(name))
            written[name] = str(files(name))
        sig_md = significance.report_section(sig, datasets, archs, strategies, runs.dataset_metrics, reference)
    else:
        sig_md = ("## Confidence intervals and paired tests\n\nNone: no job kept its predictions "
                  "(predictions.parquet beside metrics.json), so no interval or paired test could be computed.\n")

    sig_md = cost_section(cost_md) + sig_md  # the cost table's section, before the intervals'
    # one verdict across datasets: Friedman, Nemenyi's CD diagram, Bayesian signed-rank vs the reference, per modality
    written.update(verdict.write_verdict(selected, files, reference, ranked, stats, (stats or {}).get("dataset_types")))
    sig_md += "\n" + verdict.report_section(written)
    put("report.md", _report_md(runs, per_lr, selected, datasets, archs, strategies, reference, dataset_md, rel_md,
                                best_md, eff_md, t11_md, t12_md, sig_md, figure_notes, intervals=sig is not None,
                                scratch=scratch))
    return written


def cost_section(cost_md: str) -> str:
    """report.md's section of the cost table (tables.cost_table), headed by its caption."""
    return "\n".join(["## Cost beside quality\n", caption("classification/cost"),
                      "[CSV](cost.csv) · [Markdown](cost.md)\n", cost_md, ""])


def not_ranked(scratch: list[str], reference: str) -> str:
    """The note under a table that ranks the fine-tuning strategies, naming those trained from scratch it leaves
    out ("" when none)."""
    if not scratch:
        return ""
    return (f"\nNot ranked here: {', '.join(scratch)} (trained from the architecture's random initialisation, the "
            f"reference that says whether transfer helps: its rows are in the per-dataset tables, and its paired test "
            f"against {reference} in the paired comparisons).\n")


def main_scores(rel: pd.DataFrame) -> pd.DataFrame:
    """Long form for :func:`tables.best_per_dataset` / :func:`tables.effectiveness_counts`: one row per
    (dataset, arch, strategy) with its test primary-metric mean (``mean``) at the selected lr, ``se`` and ``lr``."""
    cols = {"dataset": "dataset", "arch": "arch", "strategy": "strategy", "primary_metric": "metric",
            "test_mean": "mean", "test_se": "se", "lr": "lr"}
    return rel[list(cols)].rename(columns=cols).reset_index(drop=True)


def undefined_lines(runs: Runs, dataset: str | None = None, split: str | None = None) -> list[str]:
    """One line per class left out of macro means and per undefined metric, with the jobs' reason and how many
    of the (dataset's) jobs it concerns: the dataset's split is the same for every job, so they usually agree."""
    u = runs.undefined
    if dataset is not None:
        u = u[u["dataset"] == dataset]
    if split is not None:
        u = u[u["split"] == split]
    lines = []
    for (ds, sp, kind, name, metrics, reason), g in u.groupby(["dataset", "split", "kind", "name", "metrics", "reason"],
                                                              sort=False):
        n_jobs = int((runs.table["dataset"] == ds).sum())
        where = ("" if dataset is not None else f"{ds}, ") + ("" if split is not None else f"{sp} split, ")
        what = (f"class '{name}' (macro {', '.join(tables.label(m) for m in metrics.split())})"
                if kind == "class" else f"{tables.label(name)} undefined (null; n/a in the tables)")
        lines.append(f"{where}{len(g)} of {n_jobs} jobs, {what}: {reason}.")
    return lines


def undefined_markdown(runs: Runs, dataset: str, split: str) -> str:
    """What the dataset's table leaves out on ``split``, said under it ("" when nothing)."""
    lines = undefined_lines(runs, dataset, split)
    if not lines:
        return ""
    return (f"\nNot in the macro means of this table ({split} split): classes whose score is undefined there, as "
            f"recorded in each job's metrics.json:\n\n" + "".join(f"- {line}\n" for line in lines))


def _notes(runs: Runs, per_lr: pd.DataFrame, selected: pd.DataFrame) -> list[str]:
    notes = [*undefined_lines(runs)]
    undefined = selected[selected["lr_selection"] == UNDEFINED]
    if len(undefined):
        notes.append("No learning rate selected (validation primary metric undefined at every rate tried; the "
                     "test scores are left empty, n/a): " + ", ".join(
                         f"{r.dataset}/{r.arch}/{r.strategy}" for r in undefined.itertuples()) + ".")
    counts = per_lr["n_seeds"]
    if counts.nunique() > 1:
        few = per_lr[counts < counts.max()]
        notes.append(f"Unequal numbers of seeds: {len(few)} (dataset, arch, strategy, lr) group(s) have fewer "
                     f"than {counts.max()}, e.g. " + ", ".join(
                         f"{r.dataset}/{r.arch}/{r.strategy}/lr{r.lr:g} ({r.n_seeds})" for r in few.head(5).itertuples()))
    if (counts == 1).any():
        notes.append("Some groups have a single seed: their standard error is undefined (shown as n/a).")
    n_nan = 0  # only metrics the dataset reports: a metric another dataset alone computes is not a gap
    for ds, part in runs.table.groupby("dataset"):
        cols = [f"{s}_{m}" for s in ("val", "test") for m in runs.dataset_metrics[ds]]
        n_nan += int(part[cols].isna().sum().sum())
    if n_nan:
        notes.append(f"{n_nan} score(s) are NaN or null; a group with any NaN seed has a NaN mean "
                     f"(n/a in the tables), and an lr whose validation mean is NaN is never selected over one "
                     f"that has a score.")
    return notes


def _left_out(notes: list[str]) -> list[str]:
    return ["".join(f"- {n}\n" for n in notes)] if notes else []


def _report_md(runs: Runs, per_lr, selected, datasets, archs, strategies, reference, dataset_md, rel_md, best_md,
               eff_md, t11_md, t12_md, sig_md, figure_notes: dict[str, list[str]], intervals: bool,
               scratch: list[str] = ()) -> str:
    """Every table and figure, each section headed by its caption (report/classification/<name>.rst)."""
    t = runs.table
    lrs = " ".join(f"{v:g}" for v in sorted(set(t["lr"])))
    seeds = " ".join(str(v) for v in sorted(set(t["seed"])))
    parts = [
        "# Classification report\n",
        f"{len(t)} training jobs. Datasets: {', '.join(datasets)}. Architectures: {', '.join(archs)}. "
        f"Strategies: {', '.join(strategies)}. Learning rates: {lrs}. Seeds: {seeds}. "
        f"Reference strategy: {reference}."
        + (f" Trained from scratch (does transfer help?): {', '.join(scratch)}." if scratch else "") + "\n",
        "Primary metric per dataset: " + ", ".join(f"{d} ({tables.label(runs.primary[d])})" for d in datasets) + ".\n",
        "Each section starts with the caption Snakemake's HTML report (`snakemake --report report.html`) shows beside "
        "the same result.\n",
    ]
    notes = _notes(runs, per_lr, selected)
    for note in notes:  # in the report's log too
        print(f"[report] warning: {note}", file=sys.stderr, flush=True)
    if notes:
        parts += ["## Notes\n", "".join(f"- {n}\n" for n in notes)]
    parts += ["## Results per dataset\n", caption("classification/dataset_table")]
    for ds in datasets:
        parts += [f"### {ds}\n", f"[CSV](tables/{ds}.csv) · [Markdown](tables/{ds}.md)\n", dataset_md[ds]]
    parts += [f"## Relative improvement over {reference}\n", caption("classification/relative_improvement"),
              "[CSV](relative_improvement.csv) · [Markdown](relative_improvement.md)\n", rel_md,
              caption("classification/relative_improvement_all"),
              f"![Relative improvement over {reference}](figures/relative_improvement_all.png)\n",
              *_left_out(figure_notes["all"]),
              "### Per dataset\n", caption("classification/relative_improvement_dataset")]
    for ds in datasets:
        parts += [f"![{ds}](figures/relative_improvement_{ds}.png)\n", *_left_out(figure_notes[ds])]
    parts += ["## Best method\n", caption("classification/best_method"),
              "[CSV](best_method.csv) · [Markdown](best_method.md)\n", best_md,
              "## Effectiveness\n", caption("classification/effectiveness"),
              "[CSV](effectiveness.csv) · [Markdown](effectiveness.md)\n", eff_md,
              "## Table 11: best method per dataset\n", caption("classification/table11"),
              "[CSV](table11.csv) · [Markdown](table11.md)\n", t11_md,
              "## Table 12: effectiveness per architecture\n", caption("classification/table12"),
              "[CSV](table12.csv) · [Markdown](table12.md)\n", t12_md, sig_md, "## Data\n"]
    data = ["all_runs", "per_lr", "selected"] + (["intervals"] if intervals else [])
    for name in data:
        parts += [f"### [{name}.csv]({name}.csv)\n",
                  caption(f"classification/{name}_data" if name == "intervals" else f"classification/{name}")]
    return "\n".join(parts)
