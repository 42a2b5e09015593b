"""The classification report's intervals and paired tests, as files: the per-image predictions every training
job keeps (``predictions.parquet``) loaded per (dataset, architecture), every group analysed
(:mod:`medtl.report.statistics`, whose docstring states the method; the same text is in report.md and
docs/statistics.md), and the CSV columns, Markdown tables, counts and forest plots made from the results.

The statistics' names stay importable from here (``significance.holm``, ``significance.Resampling``, ...).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtl import metrics as M

from .statistics import (BOOTSTRAP, DELONG, PAIRED_GROUP_COLUMNS, UNIT_IMAGE, UNIT_PATIENT,  # noqa: F401
                         Design, Group, GroupResult, Resampling, analyse_group, bootstrap_p, combine, delong,
                         delong_paired, design, holm, inverted_p, seed_component)
from .weighted_metrics import check_consistency, resampled_metric, weighted_metric  # noqa: F401

# -- the report: every (dataset, architecture) of a run ---------------------------------------------------
INTERVAL_COLUMNS = ["dataset", "arch", "strategy", "lr", "metric", "mean", "estimate", "ci_low", "ci_high",
                    "image_ci_low", "image_ci_high", "seed_se", "confidence_level", "resampled", "n_images",
                    "n_units", "n_seeds", "n_resamples"]
PAIRED_COLUMNS = ["dataset", "arch", "strategy", "lr", "reference", "reference_lr", "metric", "mean",
                  "reference_mean", "diff", "ci_low", "ci_high", "relative_pct", "relative_ci_low_pct",
                  "relative_ci_high_pct", "p", "p_holm", "significant", "better", "worse", "test", "seed_se",
                  "paired_seeds", "resampled", "n_images", "n_units", "n_seeds", "confidence_level", "holm_family"]
#: ``holm_family`` of the strategies and of those trained from scratch (each corrected on its own)
FAMILY_STRATEGIES, FAMILY_SCRATCH = "strategies", "scratch"


@dataclass
class Significance:
    intervals: pd.DataFrame   # INTERVAL_COLUMNS: one row per reported (dataset, arch, strategy, metric) cell
    paired: pd.DataFrame      # PAIRED_COLUMNS: one row per (dataset, arch, strategy other than the reference)
    notes: list[str]
    settings: Resampling
    scratch: list[str] = field(default_factory=list)  # strategies trained from scratch: their own Holm family


def _load_split(path: Path, split: str = "test"):
    from medtl.training.predictions import read_predictions

    pred = read_predictions(path)
    rows = pred.split(split).sort_values("index", kind="stable").reset_index(drop=True)
    return pred.task, rows["index"].to_numpy(), pred.targets(rows), rows["group"].to_numpy(), pred.scores(rows)


def load_groups(runs, selected: pd.DataFrame, notes: list[str]) -> dict[tuple[str, str], tuple[Group, dict]]:
    """Per (dataset, arch): the test predictions of every strategy (its selected lr, every seed) as a
    :class:`Group`, and each strategy's lr. A strategy whose predictions are missing or do not line up
    with the others' images is left out with a note."""
    from medtl.training.predictions import predictions_path

    files = {(r["dataset"], r["arch"], r["strategy"], float(r["lr"]), int(r["seed"])): r["file"]
             for r in runs.table.to_dict("records")}
    out = {}
    for (ds, arch), part in selected.groupby(["dataset", "arch"], sort=False):
        ref = None
        scores, lrs, missing = {}, {}, []
        for r in part.to_dict("records"):
            if r.get("lr_selection") == "undefined":  # no lr selected: no cell to give an interval
                continue
            seeds = [int(s) for s in str(r["seeds"]).split()]
            paths = [predictions_path(files[(ds, arch, r["strategy"], float(r["lr"]), s)]) for s in seeds]
            if not all(p.is_file() for p in paths):
                missing.append(r["strategy"])
                continue
            per_seed = {}
            for seed, path in zip(seeds, paths):
                task, index, y, groups, p = _load_split(path)
                if ref is None:
                    ref = (task, index, y, groups)
                elif task != ref[0] or not np.array_equal(index, ref[1]) or not np.array_equal(y, ref[2]):
                    notes.append(f"{ds}/{arch}/{r['strategy']}: its test images or targets ({path}) differ from "
                                 f"the other strategies'; left out of the intervals and paired tests")
                    per_seed = None
                    break
                per_seed[seed] = p
            if per_seed:
                scores[r["strategy"]] = per_seed
                lrs[r["strategy"]] = float(r["lr"])
        if missing:
            notes.append(f"{ds}/{arch}: no predictions.parquet for {', '.join(missing)} (older runs?): no interval "
                         "or paired test for them")
        if not scores:
            continue
        task, _, y, groups = ref
        metrics = [m for m in runs.dataset_metrics[ds] if m in M.METRICS]
        groups = None if all(g == "" for g in groups) else groups
        out[(ds, arch)] = (Group(task=task, y=y, groups=groups, scores=scores, metrics=metrics,
                                 primary=runs.primary[ds]), lrs)
    return out


def analyse(runs, selected: pd.DataFrame, reference: str, settings: Resampling | None = None,
            scratch: list[str] | tuple = ()) -> Significance | None:
    """Intervals and paired tests for every (dataset, arch) of a run; ``None`` when no job kept predictions.

    ``runs``: :func:`medtl.report.collect.collect_runs` (its ``file`` column locates each job's predictions);
    ``selected``: :func:`medtl.report.select.select_lr`; ``scratch``: the strategies trained from scratch, compared
    with the reference like the others but Holm-corrected as a family of their own (``holm_family``)."""
    settings = settings or Resampling()
    scratch = [s for s in dict.fromkeys(scratch) if s != reference]
    notes: list[str] = []
    if not any(p.is_file() for p in map(_pred_path, runs.table["file"])):
        return None
    groups = load_groups(runs, selected, notes)
    intervals, paired = [], []
    sel = {(r["dataset"], r["arch"], r["strategy"]): r for r in selected.to_dict("records")}
    for (ds, arch), (group, lrs) in groups.items():
        rng = np.random.default_rng([settings.seed, zlib.crc32(f"{ds}/{arch}".encode())])
        res = analyse_group(group, reference, settings, rng, name=f"{ds}/{arch}")
        notes += res.notes
        iv = res.intervals.assign(dataset=ds, arch=arch)
        iv["lr"] = [lrs[s] for s in iv["strategy"]]
        iv["mean"] = [sel[(ds, arch, s)].get(f"test_{m}_mean", math.nan) for s, m in zip(iv["strategy"], iv["metric"])]
        off = (iv["estimate"] - iv["mean"]).abs() > 1e-6
        if off.any():
            r = iv[off].iloc[0]
            notes.append(f"{ds}/{arch}: {int(off.sum())} score(s) recomputed from predictions.parquet differ from "
                         f"metrics.json (e.g. {r['strategy']} {r['metric']}: {r['estimate']:.6f} vs {r['mean']:.6f})")
        intervals.append(iv)
        pr = res.paired.assign(dataset=ds, arch=arch, confidence_level=settings.confidence_level)
        pr["lr"] = [lrs[s] for s in pr["strategy"]]
        pr["reference_lr"] = lrs.get(reference, math.nan)
        pr["holm_family"] = [FAMILY_SCRATCH if s in scratch else FAMILY_STRATEGIES for s in pr["strategy"]]
        pr["p_holm"] = math.nan
        for _, family in pr.groupby("holm_family", sort=False):
            pr.loc[family.index, "p_holm"] = holm(family["p"])
        pr["significant"] = pr["p_holm"] < settings.alpha
        pr["better"] = pr["significant"] & (pr["diff"] > 0)
        pr["worse"] = pr["significant"] & (pr["diff"] < 0)
        paired.append(pr)
    intervals = (pd.concat(intervals, ignore_index=True) if intervals else pd.DataFrame())
    paired = (pd.concat(paired, ignore_index=True) if paired else pd.DataFrame())
    return Significance(intervals=intervals.reindex(columns=INTERVAL_COLUMNS),
                        paired=paired.reindex(columns=PAIRED_COLUMNS), notes=notes, settings=settings,
                        scratch=scratch)


def _pred_path(metrics_file) -> Path:
    from medtl.training.predictions import predictions_path

    return predictions_path(metrics_file)


# -- tables ------------------------------------------------------------------------------------------------
def _fmt(v, d=3) -> str:
    return "n/a" if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.{d}f}"


def _fmt_p(p) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def add_interval_columns(table: pd.DataFrame, intervals: pd.DataFrame, dataset: str, archs: list[str],
                         metrics: list[str]) -> pd.DataFrame:
    """A per-dataset table (:func:`medtl.report.tables.dataset_table`) with ``{arch}_{metric}_ci_low`` and
    ``_ci_high`` after each ``{arch}_{metric}_se`` column (NaN where a cell has no interval)."""
    lookup = {(r["arch"], r["strategy"], r["metric"]): (r["ci_low"], r["ci_high"])
              for r in intervals[intervals["dataset"] == dataset].to_dict("records")}
    out = table.copy()
    for arch in archs:
        for m in metrics:
            col = f"{arch}_{m}_se"
            if col not in out:
                continue
            at = out.columns.get_loc(col) + 1
            cis = [lookup.get((arch, s, m), (math.nan, math.nan)) for s in out["strategy"]]
            out.insert(at, f"{arch}_{m}_ci_low", [c[0] for c in cis])
            out.insert(at + 1, f"{arch}_{m}_ci_high", [c[1] for c in cis])
    return out


def interval_markdown(intervals: pd.DataFrame, dataset: str, archs: list[str], strategies: list[str],
                      metrics: list[str]) -> str:
    """Strategies × (arch, metric): 'mean [low, high]', the second table of each dataset in report.md."""
    from .tables import label

    part = intervals[intervals["dataset"] == dataset]
    lookup = {(r["arch"], r["strategy"], r["metric"]): r for r in part.to_dict("records")}
    archs = [a for a in archs if a in set(part["arch"])]
    rows = []
    for s in [s for s in strategies if s in set(part["strategy"])]:
        row = {"Strategy": s}
        for a in archs:
            for m in metrics:
                r = lookup.get((a, s, m))
                row[f"{a} / {label(m)}"] = (f"{_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
                                            if r else "n/a")
        rows.append(row)
    if not rows:
        return f"No predictions for {dataset}: no intervals.\n"
    first = part.iloc[0]
    caption = (f"**{dataset}**: test mean over seeds and its {100 * first['confidence_level']:g}% interval "
               f"(bootstrap resampling {first['resampled']}, {int(first['n_resamples'])} resamples, widened by the "
               f"spread between seeds).\n\n")
    return caption + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) + "\n"


def _transfer(scratch_better, scratch_worse, p_holm) -> str:
    """Scratch significantly worse than the reference: transfer helps; significantly better: it hurts."""
    if p_holm is None or not math.isfinite(p_holm):
        return "n/a"
    return "hurts" if scratch_better else "helps" if scratch_worse else "–"


def paired_markdown(paired: pd.DataFrame, reference: str, scratch: list[str] | tuple = ()) -> str:
    """The paired comparisons of the strategies with the reference, then (with ``scratch``: the strategies trained
    from scratch) whether transfer helps: the reference against each of them, as the gain of transfer."""
    if paired.empty:
        return f"No paired comparisons with {reference} (no predictions, or no {reference} runs).\n"
    from_scratch = paired["strategy"].isin([s for s in scratch if s != reference])
    text = _strategies_markdown(paired[~from_scratch], reference) if (~from_scratch).any() else ""
    if from_scratch.any():
        text += ("\n" if text else "") + transfer_markdown(paired[from_scratch], reference)
    return text


def transfer_markdown(paired: pd.DataFrame, reference: str) -> str:
    """Does transfer help here? Per (dataset, arch): the reference (fine-tuned from the architecture's weights)
    against the strategy trained from scratch, as the gain of transfer (reference − scratch: the paired row's
    difference with its sign turned, the interval with it), p Holm-adjusted within the scratch family."""
    from .tables import label

    level = 100 * paired["confidence_level"].iloc[0]
    md = pd.DataFrame({
        "Dataset": paired["dataset"], "Arch": paired["arch"], "Metric": [label(m) for m in paired["metric"]],
        f"{reference} (transfer)": [_fmt(v) for v in paired["reference_mean"]],
        "From scratch": [f"{s}: {_fmt(v)}" for s, v in zip(paired["strategy"], paired["mean"])],
        f"Gain of transfer ({reference} − scratch)": [f"{-d:+.3f}" if math.isfinite(d) else "n/a"
                                                      for d in paired["diff"]],
        f"{level:g}% CI": [f"[{_fmt(-b)}, {_fmt(-a)}]" for a, b in zip(paired["ci_low"], paired["ci_high"])],
        "p": [_fmt_p(p) for p in paired["p"]],
        "p (Holm)": [_fmt_p(p) for p in paired["p_holm"]],
        "Transfer": [_transfer(b, w, p) for b, w, p in zip(paired["better"], paired["worse"], paired["p_holm"])],
        "Test": paired["test"],
    })
    caption = (f"**Does transfer help?** {reference} of each architecture, started from its weights, against the "
               f"same architecture trained from its random initialisation (scratch), on the primary metric, paired "
               f"on the same test images and seeds: the gain of transfer ({reference} − scratch), its {level:g}% "
               f"interval and p-value; Holm-adjusted over the scratch strategies of each (dataset, architecture), a "
               f"family of its own. *helps* / *hurts*: significant after the correction.\n\n")
    return caption + md.to_markdown(index=False, disable_numparse=True) + "\n"


def _strategies_markdown(paired: pd.DataFrame, reference: str) -> str:
    from .tables import label

    level = 100 * paired["confidence_level"].iloc[0]
    md = pd.DataFrame({
        "Dataset": paired["dataset"], "Arch": paired["arch"], "Strategy": paired["strategy"],
        "Metric": [label(m) for m in paired["metric"]],
        f"Δ vs {reference}": [f"{d:+.3f}" if math.isfinite(d) else "n/a" for d in paired["diff"]],
        f"{level:g}% CI": [f"[{_fmt(a)}, {_fmt(b)}]" for a, b in zip(paired["ci_low"], paired["ci_high"])],
        "Δ (%)": [f"{v:+.2f}" if math.isfinite(v) else "n/a" for v in paired["relative_pct"]],
        "p": [_fmt_p(p) for p in paired["p"]],
        "p (Holm)": [_fmt_p(p) for p in paired["p_holm"]],
        "Significant": ["better" if b else "worse" if w else "–" for b, w in zip(paired["better"], paired["worse"])],
        "Test": paired["test"],
    })
    caption = (f"Paired comparison of each strategy with {reference} of the same architecture on the primary "
               f"metric: difference of the seed means on the same test images and seeds, its {level:g}% interval "
               f"and p-value (DeLong's test for a binary AUROC, else the paired bootstrap), Holm-adjusted over the "
               f"strategies of each (dataset, architecture); significant: adjusted p < {1 - level / 100:g}.\n\n")
    return caption + md.to_markdown(index=False, disable_numparse=True) + "\n"


def significance_counts(paired: pd.DataFrame, strategies: list[str], reference: str,
                        archs: list[str] | None = None) -> pd.DataFrame:
    """Per strategy other than the reference: the (dataset, arch) pairs where it is significantly better /
    worse than the reference after Holm's correction, and (with ``archs``) ``better_{arch}`` per architecture."""
    rows = []
    for s in strategies:
        if s == reference:
            continue
        part = paired[paired["strategy"] == s]
        better = part["better"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        worse = part["worse"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        row = {"strategy": s, "n_better_significant": int(better.sum()), "n_worse_significant": int(worse.sum()),
               "n_tested": int(part["p_holm"].notna().sum()),
               "significantly_better_on": " ".join(f"{d}/{a}" for d, a in
                                                   zip(part["dataset"][better], part["arch"][better]))}
        for a in archs or []:
            row[f"better_{a}"] = int(better[(part["arch"] == a).to_numpy()].sum())
        rows.append(row)
    return pd.DataFrame(rows, columns=["strategy", "n_better_significant", "n_worse_significant", "n_tested",
                                       "significantly_better_on", *(f"better_{a}" for a in archs or [])])


def _paired_lookup(paired: pd.DataFrame) -> dict[tuple[str, str, str], dict]:
    return {(r["dataset"], r["arch"], r["strategy"]): r for r in paired.to_dict("records")}


def _gain_columns(rows: list[dict], paired: pd.DataFrame, keys) -> dict[str, list]:
    """For rows naming (dataset, arch, strategy): the paired test of that strategy against the reference."""
    lookup = _paired_lookup(paired)
    cols = {"gain_ci_low_pct": [], "gain_ci_high_pct": [], "gain_p_holm": [], "gain_significant": [],
            "gain_test": []}
    for r in rows:
        t = lookup.get(tuple(r.get(k) for k in keys))
        cols["gain_ci_low_pct"].append(t["relative_ci_low_pct"] if t else math.nan)
        cols["gain_ci_high_pct"].append(t["relative_ci_high_pct"] if t else math.nan)
        cols["gain_p_holm"].append(t["p_holm"] if t else math.nan)
        cols["gain_significant"].append(bool(t["better"]) if t and math.isfinite(t["p_holm"]) else pd.NA)
        cols["gain_test"].append(t["test"] if t else "")
    return cols


def flag_best(best: pd.DataFrame, paired: pd.DataFrame, strategy_col: str) -> pd.DataFrame:
    """Best-method tables (``best_method.csv``: ``best_strategy``; Table 11: ``strategy``) with the paired test
    of the winner against the reference of the same architecture: ``gain_significant`` is False for a best
    method whose gain is not significant after Holm's correction (NA when the winner is the reference)."""
    out = best.copy()
    rows = [{"dataset": r["dataset"], "arch": r["arch"], "strategy": r[strategy_col]} for r in best.to_dict("records")]
    for k, v in _gain_columns(rows, paired, ("dataset", "arch", "strategy")).items():
        out[k] = pd.Series(v, index=out.index, dtype="boolean" if k == "gain_significant" else None)
    return out


def add_counts(eff: pd.DataFrame, paired: pd.DataFrame, strategies: list[str], reference: str) -> pd.DataFrame:
    """``effectiveness.csv`` with the second count beside the threshold rule's ``n_better``:
    ``n_better_significant`` (and ``n_worse_significant``, ``significantly_better_on``)."""
    counts = significance_counts(paired, strategies, reference).set_index("strategy")
    out = eff.copy()
    at = out.columns.get_loc("n_better") + 1 if "n_better" in out else len(out.columns)
    for i, col in enumerate(("n_better_significant", "n_worse_significant")):
        out.insert(at + i, col, [int(counts.loc[s, col]) if s in counts.index else 0 for s in out["strategy"]])
    out["significantly_better_on"] = [counts.loc[s, "significantly_better_on"] if s in counts.index else ""
                                      for s in out["strategy"]]
    return out


def add_table12_counts(t12: pd.DataFrame, paired: pd.DataFrame, archs: list[str], reference: str,
                       total_label: str = "Total") -> pd.DataFrame:
    """Table 12 with ``significant_{arch}`` and ``total_significant``: the datasets where the strategy is better
    than the reference of the same architecture after Holm's correction, beside the > threshold counts."""
    archs = [a for a in archs if a in t12]
    strategies = [s for s in t12["strategy"] if s != total_label]
    counts = significance_counts(paired, strategies, reference, archs).set_index("strategy")
    out = t12.copy()
    for a in archs:
        vals = [int(counts.loc[s, f"better_{a}"]) if s in counts.index else 0 for s in strategies]
        out[f"significant_{a}"] = vals + [sum(vals)] * (len(out) - len(strategies))
    per = [sum(int(out.loc[i, f"significant_{a}"]) for a in archs) for i in out.index]
    out["total_significant"] = per
    return out


def report_section(sig: "Significance", datasets: list[str], archs: list[str], strategies: list[str],
                   dataset_metrics: dict[str, list[str]], reference: str) -> str:
    """report.md's part: this run's settings, an interval table per dataset, the forest plots and the paired
    table, each headed by its caption (report/classification/<name>.rst)."""
    from .document import caption

    st = sig.settings
    parts = [
        "## Confidence intervals and paired tests\n",
        "[Intervals CSV](intervals.csv) · [Paired comparisons CSV](paired_comparison.csv) · "
        "[Markdown](paired_comparison.md)\n",
        f"This run: {100 * st.confidence_level:g}% intervals, {st.n_resamples} bootstrap resamples (seed {st.seed}); "
        f"each strategy against {reference}, *significant* = Holm-adjusted p < {st.alpha:g}"
        + (f"; trained from scratch ({', '.join(sig.scratch)}): against {reference} too, Holm-corrected on "
           f"their own, in the table that asks whether transfer helps" if sig.scratch else "") + ".\n",
    ]
    if sig.notes:
        parts += ["Notes:\n", "".join(f"- {n}\n" for n in sig.notes)]
    parts += ["### Intervals per dataset\n", caption("classification/intervals")]
    for ds in datasets:
        parts += [f"#### {ds}\n", f"[Markdown](tables/{ds}_intervals.md)\n",
                  interval_markdown(sig.intervals, ds, archs, strategies, dataset_metrics[ds])]
    parts += ["### Forest plots\n", caption("classification/forest")]
    parts += [f"![Forest plot {ds}](figures/forest_{ds}.png)\n" for ds in datasets]
    parts += ["### Paired comparisons\n", caption("classification/paired_comparison"),
              paired_markdown(sig.paired, reference, sig.scratch)]
    return "\n".join(parts)


# -- forest plots -----------------------------------------------------------------------------------------
def forest_plot(paired: pd.DataFrame, dataset: str, archs: list[str], strategies: list[str], reference: str,
                path: str | Path) -> None:
    """Each strategy's relative difference from the reference (%) with its interval, one row per architecture;
    filled markers: significant after Holm's correction."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medtl.io import atomic_path

    from .tables import label

    part = paired[paired["dataset"] == dataset]
    archs = [a for a in archs if a in set(part["arch"])]
    others = [s for s in strategies if s != reference and s in set(part["strategy"])]
    lookup = {(r["arch"], r["strategy"]): r for r in part.to_dict("records")}
    rows = [(s, a) for s in others for a in archs]
    fig = Figure(figsize=(7.0, max(2.5, 0.28 * len(rows) + 0.35 * len(others) + 1.2)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {a: f"C{i}" for i, a in enumerate(archs)}
    y, ticks, labels = 0.0, [], []
    for s in others:
        for a in archs:
            r = lookup.get((a, s))
            if r is not None and math.isfinite(r["relative_pct"]):
                lo, hi = r["relative_ci_low_pct"], r["relative_ci_high_pct"]
                ax.errorbar([r["relative_pct"]], [y], xerr=[[r["relative_pct"] - lo], [hi - r["relative_pct"]]],
                            fmt="o", color=colors[a], mfc=colors[a] if r["significant"] else "white", capsize=2)
            else:
                ax.text(0, y, "n/a", va="center", fontsize=7)
            ticks.append(y)
            labels.append(f"{s} · {a}")
            y -= 1.0
        y -= 0.5
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ticks, labels, fontsize=8)
    metric = label(part["metric"].iloc[0]) if len(part) else ""
    level = 100 * part["confidence_level"].iloc[0] if len(part) else 95
    ax.set_xlabel(f"Difference from {reference}, test {metric} (% of {reference}), {level:g}% interval")
    ax.set_title(f"{dataset}: each strategy against {reference} (filled: significant after Holm)")
    for a in archs:
        ax.plot([], [], "o", color=colors[a], label=a)
    if archs:
        ax.legend(title="Architecture", fontsize=8, loc="best")
    if not rows:
        ax.text(0.5, 0.5, f"no paired comparison with {reference}", ha="center", va="center", transform=ax.transAxes)
    ax.grid(axis="x", alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
