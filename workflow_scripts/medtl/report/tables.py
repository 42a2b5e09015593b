"""The study's tables, built from the selected-lr summary (one row per dataset, arch, strategy).

All metrics are higher-is-better (``medtl.metrics.HIGHER_IS_BETTER``); "best" means highest.
Relative improvement over the reference strategy is ``100 * (m - m_ref) / |m_ref|`` on the
test primary metric (seed means at each strategy's own selected lr); it is NaN where the
reference is missing, NaN or zero. ``|m_ref|`` only differs from ``m_ref`` for a negative
reference score (possible for kappa), where it keeps "positive = better".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

LABELS = {"map": "mAP", "accuracy": "Accuracy", "auroc": "AUROC", "kappa": "Kappa", "macro_f1": "Macro F1",
          "balanced_accuracy": "Balanced accuracy"}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def ordered(present, given: list[str] | None = None) -> list[str]:
    """``given`` order restricted to what is present, then anything else present, sorted."""
    present = list(dict.fromkeys(present))
    head = [x for x in dict.fromkeys(given or []) if x in present]
    return head + sorted(x for x in present if x not in head)


def fmt(value: float, decimals: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{decimals}f}"


def fmt_mean_se(mean: float, se: float, decimals: int = 3) -> str:
    """'mean ± se'; 'n/a' for a NaN mean, 'mean ± n/a' when the SE is undefined (one seed)."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{decimals}f} ± {fmt(se, decimals)}"


def fmt_pct(value: float, decimals: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.{decimals}f}"


def bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def best_flags(values) -> list[bool]:
    """True for every finite value equal to the maximum (ties are all marked); none if all NaN."""
    x = np.asarray(list(values), dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return [False] * len(x)
    top = x[finite].max()
    return [bool(f and v == top) for f, v in zip(finite, x)]


def markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True) + "\n"


def _lookup(selected: pd.DataFrame) -> dict[tuple[str, str, str], dict]:
    return {(r["dataset"], r["arch"], r["strategy"]): r for r in selected.to_dict("records")}


# -- per-dataset results table (the paper's tables 3-10) --------------------------------------------
def dataset_table(selected: pd.DataFrame, dataset: str, archs: list[str], strategies: list[str],
                  metrics: list[str]) -> pd.DataFrame:
    """Rows = strategies; per arch and metric: the 'mean ± se' cell, mean, SE and a best flag (test split)."""
    rows = _lookup(selected)
    archs = [a for a in archs if any((dataset, a, s) in rows for s in strategies)]
    strategies = [s for s in strategies if any((dataset, a, s) in rows for a in archs)]
    out = pd.DataFrame({"strategy": strategies})
    for arch in archs:
        recs = [rows.get((dataset, arch, s)) for s in strategies]
        out[f"lr_{arch}"] = [r["lr"] if r else math.nan for r in recs]
        for m in metrics:
            mean = [r[f"test_{m}_mean"] if r else math.nan for r in recs]
            se = [r[f"test_{m}_se"] if r else math.nan for r in recs]
            out[f"{arch}_{m}"] = [fmt_mean_se(a, b) for a, b in zip(mean, se)]
            out[f"{arch}_{m}_mean"] = mean
            out[f"{arch}_{m}_se"] = se
            out[f"best_{arch}_{m}"] = best_flags(mean)
    return out


def dataset_markdown(table: pd.DataFrame, dataset: str, archs: list[str], metrics: list[str],
                     primary: str, n_seeds: str) -> str:
    archs = [a for a in archs if f"lr_{a}" in table]
    md = pd.DataFrame({"Strategy": table["strategy"]})
    for arch in archs:
        for m in metrics:
            md[f"{arch} / {label(m)}"] = [bold(c, b) for c, b in zip(table[f"{arch}_{m}"], table[f"best_{arch}_{m}"])]
    caption = (f"**{dataset}**: test results, mean ± standard error over {n_seeds} seed(s), each strategy at the "
               f"learning rate selected on validation {label(primary)}. Bold: best strategy per architecture "
               f"and metric.\n\n")
    return caption + markdown(md)


# -- relative improvement over the reference ------------------------------------------------------
def relative_improvement(selected: pd.DataFrame, reference: str, threshold: float) -> pd.DataFrame:
    """Long table: per dataset, arch and strategy, the test primary metric against the reference's."""
    rows = _lookup(selected)
    out = []
    for (ds, arch, strategy), r in rows.items():
        p = r["primary_metric"]
        ref = rows.get((ds, arch, reference))
        m = r[f"test_{p}_mean"]
        m_ref = ref[f"test_{p}_mean"] if ref else math.nan
        frac = (m - m_ref) / abs(m_ref) if math.isfinite(m) and math.isfinite(m_ref) and m_ref != 0 else math.nan
        out.append({"dataset": ds, "arch": arch, "strategy": strategy, "primary_metric": p,
                    "lr": r["lr"], "test_mean": m, "test_se": r[f"test_{p}_se"],
                    "reference": reference, "reference_lr": ref["lr"] if ref else math.nan,
                    "reference_test_mean": m_ref, "relative_change": frac,
                    "relative_improvement_pct": 100.0 * frac,
                    "effective": bool(math.isfinite(frac) and frac > threshold)})
    return pd.DataFrame(out)


@dataclass
class LeftOut:
    """The strategies and (dataset, architecture) pairs of a relative-improvement table or figure that have no
    value at all, each with why, and what is kept; the figure or table shows the kept ones and names the rest."""

    strategies: list[str]                 # kept
    pairs: list[tuple[str, str]]          # kept
    dropped_strategies: dict[str, list[str]] = field(default_factory=dict)  # reason -> strategies
    dropped_pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # reason -> pairs

    def sentences(self, strategy_part: str, pair_part: str) -> list[str]:
        """E.g. ``sentences("rows", "columns")``: one sentence per reason, naming what it left out."""
        out = [f"Left out, {pair_part} ({why}): {', '.join(f'{d} / {a}' for d, a in pairs)}."
               for why, pairs in self.dropped_pairs.items()]
        out += [f"Left out, {strategy_part} ({why}): {', '.join(names)}."
                for why, names in self.dropped_strategies.items()]
        return out


def left_out(rel: pd.DataFrame, strategies: list[str], pairs: list[tuple[str, str]], reference: str) -> LeftOut:
    """Which ``strategies`` and ``pairs`` have no finite relative improvement anywhere among the others (all
    n/a: nothing to show), and why: no reference run there, a reference score that is n/a or 0, or a
    strategy that never ran beside the reference."""
    lookup = {(r["dataset"], r["arch"], r["strategy"]): r for r in rel.to_dict("records")}

    def value(s, pair):
        r = lookup.get((*pair, s))
        return r["relative_improvement_pct"] if r is not None else math.nan

    def finite(v):
        return v is not None and math.isfinite(v)

    kept_s = [s for s in strategies if any(finite(value(s, p)) for p in pairs)]
    kept_p = [p for p in pairs if any(finite(value(s, p)) for s in strategies)]
    out = LeftOut(strategies=kept_s, pairs=kept_p)
    for p in pairs:
        if p in kept_p:
            continue
        ref = lookup.get((*p, reference))
        why = (f"no {reference} run on it to compare with" if ref is None
               else f"its {reference} test score is n/a" if not finite(ref["test_mean"])
               else f"its {reference} test score is 0" if ref["test_mean"] == 0
               else f"no strategy but {reference} has a test score on it")
        out.dropped_pairs.setdefault(why, []).append(p)
    for s in strategies:
        if s in kept_s:
            continue
        beside = [p for p in pairs if (*p, s) in lookup and (*p, reference) in lookup]
        why = (f"never ran beside {reference} on the same dataset and architecture" if not beside
               else f"no test score where it ran beside {reference}")
        out.dropped_strategies.setdefault(why, []).append(s)
    return out


def relative_markdown(rel: pd.DataFrame, datasets: list[str], archs: list[str], strategies: list[str],
                      reference: str, threshold: float) -> str:
    """Rows = (dataset, arch), columns = strategies other than the reference; best per row in bold. Rows and
    columns with no value at all (no reference to compare with) are left out and named under the table."""
    lookup = {(r["dataset"], r["arch"], r["strategy"]): r for r in rel.to_dict("records")}
    pairs = [(ds, arch) for ds in datasets for arch in archs if any((ds, arch, s) in lookup for s in strategies)]
    shown = left_out(rel, [s for s in strategies if s != reference], pairs, reference)
    others = shown.strategies
    rows = []
    for ds in datasets:
        for arch in archs:
            if (ds, arch) not in shown.pairs:
                continue
            ref = lookup.get((ds, arch, reference))
            p = next(lookup[(ds, arch, s)]["primary_metric"] for s in strategies if (ds, arch, s) in lookup)
            vals = [lookup[(ds, arch, s)]["relative_improvement_pct"] if (ds, arch, s) in lookup else math.nan
                    for s in others]
            flags = best_flags(vals)
            row = {"Dataset": ds, "Arch": arch, "Metric": label(p),
                   f"{reference} (test)": fmt(ref["test_mean"]) if ref else "n/a"}
            row.update({s: bold(fmt_pct(v), f) for s, v, f in zip(others, vals, flags)})
            rows.append(row)
    caption = (f"Relative improvement (%) of each strategy over {reference} on the test primary metric, "
               f"100 · (m − m_{reference}) / m_{reference}, seed means at each strategy's selected learning rate. "
               f"Bold: best per row among the strategies other than {reference}. A strategy counts as effective above {100 * threshold:g}%.\n\n")
    notes = shown.sentences("columns", "rows")
    return caption + markdown(pd.DataFrame(rows)) + "".join(f"\n{n}\n" for n in notes)


# -- best method per dataset and architecture --------------------------------------------------------
def best_method(rel: pd.DataFrame, datasets: list[str], archs: list[str], strategies: list[str]) -> pd.DataFrame:
    """Per (dataset, arch): the strategy with the highest test primary metric; ties go to the first in order."""
    lookup = {(r["dataset"], r["arch"], r["strategy"]): r for r in rel.to_dict("records")}
    out = []
    for ds in datasets:
        for arch in archs:
            cands = [lookup[(ds, arch, s)] for s in strategies if (ds, arch, s) in lookup]
            if not cands:
                continue
            flags = best_flags(c["test_mean"] for c in cands)
            winners = [c for c, f in zip(cands, flags) if f]
            best = winners[0] if winners else None
            out.append({"dataset": ds, "arch": arch, "primary_metric": cands[0]["primary_metric"],
                        "best_strategy": best["strategy"] if best else None,
                        "tied_with": " ".join(w["strategy"] for w in winners[1:]),
                        "lr": best["lr"] if best else math.nan,
                        "test_mean": best["test_mean"] if best else math.nan,
                        "test_se": best["test_se"] if best else math.nan,
                        "reference": cands[0]["reference"],
                        "reference_test_mean": cands[0]["reference_test_mean"],
                        "gain_pct": best["relative_improvement_pct"] if best else math.nan,
                        "n_strategies": len(cands)})
    return pd.DataFrame(out)


def add_significance_column(md: pd.DataFrame, best: pd.DataFrame) -> None:
    """medtl.report.significance's flag, where the report has it: "no" marks a gain within the noise."""
    if "gain_significant" in best:
        md["Gain significant (Holm)"] = ["–" if pd.isna(v) else "yes" if v else "no" for v in best["gain_significant"]]


def best_markdown(best: pd.DataFrame, reference: str) -> str:
    md = pd.DataFrame({
        "Dataset": best["dataset"], "Arch": best["arch"], "Metric": [label(m) for m in best["primary_metric"]],
        "Best strategy": [s if s else "n/a" for s in best["best_strategy"]],
        "lr": [f"{v:g}" if math.isfinite(v) else "n/a" for v in best["lr"]],
        "Test": [fmt_mean_se(m, s) for m, s in zip(best["test_mean"], best["test_se"])],
        f"{reference} (test)": [fmt(v) for v in best["reference_test_mean"]],
        f"Gain over {reference} (%)": [fmt_pct(v) for v in best["gain_pct"]],
    })
    add_significance_column(md, best)
    ties = [f"{d}/{a}: {s} ties with {t}" for d, a, s, t in
            zip(best["dataset"], best["arch"], best["best_strategy"], best["tied_with"]) if t]
    text = (f"Best strategy per dataset and architecture on the test primary metric (ties go to the first "
            f"strategy in the configured order).\n\n") + markdown(md)
    if ties:
        text += "\nTies: " + "; ".join(ties) + "\n"
    return text


# -- effectiveness (the paper's last table) ---------------------------------------------------------
def effectiveness(rel: pd.DataFrame, strategies: list[str], reference: str, threshold: float) -> pd.DataFrame:
    """Per strategy: on how many (dataset, arch) pairs it beats the reference by more than ``threshold``."""
    out = []
    for s in strategies:
        if s == reference:
            continue
        part = rel[rel["strategy"] == s]
        frac = part["relative_change"].to_numpy(dtype=np.float64)
        ok = np.isfinite(frac)
        effective = part[part["effective"]]
        out.append({"strategy": s, "reference": reference, "threshold": threshold,
                    "n_better": int((frac[ok] > threshold).sum()),
                    "n_worse": int((frac[ok] < -threshold).sum()),
                    "n_pairs": int(ok.sum()),
                    "n_not_comparable": int((~ok).sum()),
                    "mean_relative_improvement_pct": float(100 * frac[ok].mean()) if ok.any() else math.nan,
                    "effective_on": " ".join(f"{d}/{a}" for d, a in zip(effective["dataset"], effective["arch"]))})
    return pd.DataFrame(out, columns=["strategy", "reference", "threshold", "n_better", "n_worse", "n_pairs",
                                      "n_not_comparable", "mean_relative_improvement_pct", "effective_on"])


def effectiveness_markdown(eff: pd.DataFrame, reference: str, threshold: float) -> str:
    """The table of :func:`effectiveness` without the strategies that never ran beside the reference (a
    strategy restricted to an architecture without it, e.g. the ViT SPFT ablation): named below it instead."""
    pct = f"{100 * threshold:g}%"
    alone = (eff["n_pairs"] == 0) & (eff["n_not_comparable"] == 0)
    unpaired = list(eff.loc[alone, "strategy"])
    eff = eff[~alone]
    md = pd.DataFrame({
        "Strategy": eff["strategy"],
        f"Better than {reference} (> {pct})": [f"{b} / {n}" for b, n in zip(eff["n_better"], eff["n_pairs"])],
        f"Worse (< −{pct})": [f"{w} / {n}" for w, n in zip(eff["n_worse"], eff["n_pairs"])],
        "Mean gain (%)": [fmt_pct(v) for v in eff["mean_relative_improvement_pct"]],
        "Effective on": [s or "–" for s in eff["effective_on"]],
    })
    if "n_better_significant" in eff:  # the second count (medtl.report.significance): beyond noise, Holm-corrected
        md.insert(2, "Significantly better (Holm)",
                  [f"{b} / {n}" for b, n in zip(eff["n_better_significant"], eff["n_pairs"])])
    caption = (f"Effectiveness: the number of (dataset, architecture) pairs on which each strategy improves the "
               f"test primary metric over {reference} by more than {pct} (relative), out of the pairs where both "
               f"have a score.\n\n")
    note = (f"\n\nNot compared (no {reference} run on the same dataset and architecture): "
            f"{', '.join(unpaired)}." if unpaired else "")
    return caption + markdown(md) + note


# -- the paper's Table 11 and Table 12, from long-form scores --------------------------------------------
# Pure functions of one frame with a row per (dataset, arch, strategy) and its main-metric score ``mean``
# (optionally ``metric`` and any other columns, e.g. ``lr``, ``se``): the classification report feeds them
# our test means at the selected lr, the published report the paper's own Tables 3-10, so both tables are
# built by the same code.
SCORE_KEYS = ("dataset", "arch", "strategy")
TOTAL = "Total"


def _scores(scores: pd.DataFrame, datasets, archs, strategies) -> tuple[pd.DataFrame, list, list, list]:
    missing = [c for c in (*SCORE_KEYS, "mean") if c not in scores]
    if missing:
        raise ValueError(f"scores lack column(s) {missing}; expected one row per (dataset, arch, strategy) with "
                         f"its main-metric 'mean'")
    dup = scores.duplicated(list(SCORE_KEYS))
    if dup.any():
        raise ValueError(f"scores list a (dataset, arch, strategy) twice: "
                         f"{scores.loc[dup, list(SCORE_KEYS)].head(3).to_dict('records')}")
    return (scores, ordered(scores["dataset"], datasets), ordered(scores["arch"], archs),
            ordered(scores["strategy"], strategies))


def relative_gain(mean: float, reference_mean: float) -> float:
    """(m - m_ref) / |m_ref| as a fraction; NaN where either is missing or NaN, or the reference is zero."""
    if mean is None or reference_mean is None or not (math.isfinite(mean) and math.isfinite(reference_mean)) \
            or reference_mean == 0:
        return math.nan
    return (mean - reference_mean) / abs(reference_mean)


def best_per_dataset(scores: pd.DataFrame, reference: str = "ft", datasets: list[str] | None = None,
                     archs: list[str] | None = None, strategies: list[str] | None = None) -> pd.DataFrame:
    """The paper's Table 11: per dataset, the (arch, strategy) with the highest ``mean`` over every architecture
    and strategy, and its gain over the SAME architecture's ``reference``: ``gain_pct`` = 100 (m − m_ref) / m_ref
    (0 when the reference itself wins; NaN without a reference score). Ties go to the first in (arch, strategy)
    order and are listed in ``tied_with``; NaN means never win. Other columns of the winning row follow."""
    scores, datasets, archs, strategies = _scores(scores, datasets, archs, strategies)
    lookup = {(r["dataset"], r["arch"], r["strategy"]): r for r in scores.to_dict("records")}
    extra = [c for c in scores.columns if c not in (*SCORE_KEYS, "metric", "mean")]
    out = []
    for ds in datasets:
        cands = [lookup[(ds, a, s)] for a in archs for s in strategies if (ds, a, s) in lookup]
        if not cands:
            continue
        flags = best_flags(c["mean"] for c in cands)
        winners = [c for c, f in zip(cands, flags) if f]
        best = winners[0] if winners else None
        ref = lookup.get((ds, best["arch"], reference)) if best else None
        ref_mean = ref["mean"] if ref else math.nan
        row = {"dataset": ds, "metric": cands[0].get("metric", ""),
               "arch": best["arch"] if best else None, "strategy": best["strategy"] if best else None,
               "mean": best["mean"] if best else math.nan, "reference": reference, "reference_mean": ref_mean,
               "gain_pct": 100.0 * relative_gain(best["mean"], ref_mean) if best else math.nan,
               "tied_with": " ".join(f"{w['arch']}/{w['strategy']}" for w in winners[1:]),
               "n_candidates": len(cands)}
        row.update({c: best.get(c) if best else None for c in extra})
        out.append(row)
    return pd.DataFrame(out, columns=["dataset", "metric", "arch", "strategy", "mean", "reference", "reference_mean",
                                      "gain_pct", "tied_with", "n_candidates", *extra])


def table11_markdown(best: pd.DataFrame, reference: str) -> str:
    md = pd.DataFrame({
        "Dataset": best["dataset"], "Metric": [label(m) if m else "–" for m in best["metric"]],
        "Architecture": [a if a else "n/a" for a in best["arch"]],
        "Strategy": [s if s else "n/a" for s in best["strategy"]],
        "Score": [fmt(v) for v in best["mean"]],
        f"{reference} (same arch)": [fmt(v) for v in best["reference_mean"]],
        f"Gain over {reference} (%)": [fmt_pct(v) for v in best["gain_pct"]],
    })
    add_significance_column(md, best)
    ties = [f"{d}: {a}/{s} ties with {t}" for d, a, s, t in
            zip(best["dataset"], best["arch"], best["strategy"], best["tied_with"]) if t]
    text = (f"Best (architecture, strategy) per dataset on the main metric, over every architecture and strategy "
            f"(the paper's Table 11), with its relative gain over {reference} of the same architecture, "
            f"100 · (m − m_{reference}) / m_{reference}.\n\n") + markdown(md)
    if ties:
        text += "\nTies (the first in architecture, then strategy order is shown): " + "; ".join(ties) + "\n"
    return text


def effectiveness_counts(scores: pd.DataFrame, reference: str = "ft", threshold: float = 0.001,
                         datasets: list[str] | None = None, archs: list[str] | None = None,
                         strategies: list[str] | None = None) -> pd.DataFrame:
    """The paper's Table 12: per strategy other than ``reference``, one column per architecture counting the
    datasets where the strategy beats that architecture's ``reference`` by more than ``threshold`` (relative,
    0.001 = 0.1 %) on ``mean``; ``total`` over the architectures, ``n_experiments`` = n datasets × n archs
    (every dataset and architecture present in ``scores``) and ``effectiveness_pct`` = 100 · total /
    n_experiments; ``n_not_comparable`` counts the (dataset, arch) pairs without both scores. A last row
    ``Total`` sums each column (its effectiveness is over all strategies' experiments)."""
    scores, datasets, archs, strategies = _scores(scores, datasets, archs, strategies)
    lookup = {(r["dataset"], r["arch"], r["strategy"]): r["mean"] for r in scores.to_dict("records")}

    def comparable(ds, a, s):
        return math.isfinite(relative_gain(lookup.get((ds, a, s), math.nan), lookup.get((ds, a, reference), math.nan)))

    # an architecture never run with the reference (e.g. one that only runs an ablation) has no column, and a
    # strategy compared nowhere no row: they are not experiments of this table
    archs = [a for a in archs if any(math.isfinite(lookup.get((ds, a, reference), math.nan)) for ds in datasets)]
    strategies = [s for s in strategies if any(comparable(ds, a, s) for ds in datasets for a in archs)]
    n_exp = len(datasets) * len(archs)
    out = []
    for s in strategies:
        if s == reference:
            continue
        row: dict = {"strategy": s}
        missing = 0
        for a in archs:
            n = 0
            for ds in datasets:
                gain = relative_gain(lookup.get((ds, a, s), math.nan), lookup.get((ds, a, reference), math.nan))
                if math.isfinite(gain):
                    n += gain > threshold
                else:
                    missing += 1
            row[a] = int(n)
        row["total"] = int(sum(row[a] for a in archs))
        row["n_experiments"] = n_exp
        row["effectiveness_pct"] = 100.0 * row["total"] / n_exp if n_exp else math.nan
        row["n_not_comparable"] = missing
        out.append(row)
    columns = ["strategy", *archs, "total", "n_experiments", "effectiveness_pct", "n_not_comparable"]
    if out:
        total = {"strategy": TOTAL, **{c: int(sum(r[c] for r in out)) for c in (*archs, "total")},
                 "n_experiments": n_exp * len(out), "n_not_comparable": int(sum(r["n_not_comparable"] for r in out))}
        total["effectiveness_pct"] = 100.0 * total["total"] / total["n_experiments"] if total["n_experiments"] \
            else math.nan
        out.append(total)
    table = pd.DataFrame(out, columns=columns)
    table.attrs.update(reference=reference, threshold=threshold)
    return table


def table12_markdown(counts: pd.DataFrame, archs: list[str], reference: str, threshold: float) -> str:
    pct = f"{100 * threshold:g}%"
    archs = [a for a in archs if a in counts]
    md = pd.DataFrame({"Strategy": [bold(s, s == TOTAL) for s in counts["strategy"]]})
    for a in archs:
        md[a] = [str(v) for v in counts[a]]
    md["Total"] = [str(v) for v in counts["total"]]
    md["Effectiveness (%)"] = [fmt(v, 1) for v in counts["effectiveness_pct"]]
    if "total_significant" in counts:  # the second count (medtl.report.significance): beyond noise, Holm-corrected
        md.insert(md.columns.get_loc("Total") + 1, "Significant (Holm)", [str(v) for v in counts["total_significant"]])
    caption = (f"Number of datasets on which each strategy improves the main metric over {reference} of the same "
               f"architecture by more than {pct} (relative), per architecture (the paper's Table 12); "
               f"Effectiveness = Total / (datasets × architectures).\n\n")
    gaps = int(counts.loc[counts["strategy"] != TOTAL, "n_not_comparable"].sum()) if len(counts) else 0
    note = (f"\n{gaps} (dataset, architecture, strategy) setting(s) lack a score of theirs or of {reference}: they "
            f"count as no improvement.\n") if gaps else ""
    return caption + markdown(md) + note


# -- cost beside quality ----------------------------------------------------------------------------------
COST_COLUMNS = ["dataset", "arch", "strategy", "lr", "n_jobs", "primary_metric", "test_mean", "test_se",
                "trainable_params", "total_params", "trainable_percent", "seconds_per_job", "train_seconds",
                "peak_memory_mb", "peak_memory_of"]


def fmt_params(trainable: float, percent: float) -> str:
    """'34,715 (11.2 %)': trainable parameters and their share of the model; 'n/a' where a job did not record it."""
    if trainable is None or not math.isfinite(trainable):
        return "n/a"
    share = f"{percent:.3g} %" if percent is not None and math.isfinite(percent) else "n/a"
    return f"{int(round(trainable)):,} ({share})"


def cost_table(all_runs: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, arch, strategy) at its selected learning rate: the test primary metric (mean ± SE, as
    in the dataset tables) beside what its jobs cost, over their seeds: trainable parameters (the most in an epoch)
    and their % of the model, seconds per job (all of it) and of training, peak memory (the highest)."""
    rows = []
    for r in selected.to_dict("records"):
        jobs = all_runs[(all_runs["dataset"] == r["dataset"]) & (all_runs["arch"] == r["arch"])
                        & (all_runs["strategy"] == r["strategy"]) & np.isclose(all_runs["lr"], r["lr"])]
        measured = [m for m in jobs.get("peak_memory_of", pd.Series(dtype=object)).dropna().unique()]

        def mean(col: str) -> float:
            values = jobs[col].to_numpy(dtype=np.float64) if col in jobs else np.array([])
            return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan

        peak = jobs["peak_memory_mb"].to_numpy(dtype=np.float64) if "peak_memory_mb" in jobs else np.array([])
        rows.append({"dataset": r["dataset"], "arch": r["arch"], "strategy": r["strategy"], "lr": r["lr"],
                     "n_jobs": len(jobs), "primary_metric": r["primary_metric"],
                     "test_mean": r[f"test_{r['primary_metric']}_mean"], "test_se": r[f"test_{r['primary_metric']}_se"],
                     "trainable_params": mean("trainable_params"), "total_params": mean("total_params"),
                     "trainable_percent": mean("trainable_percent"), "seconds_per_job": mean("seconds"),
                     "train_seconds": mean("train_seconds"),
                     "peak_memory_mb": float(np.nanmax(peak)) if np.isfinite(peak).any() else math.nan,
                     "peak_memory_of": " / ".join(sorted(map(str, measured))) or None})
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def cost_markdown(cost: pd.DataFrame) -> str:
    md = pd.DataFrame({
        "Dataset": cost["dataset"], "Architecture": cost["arch"], "Strategy": cost["strategy"],
        "Test (primary)": [f"{label(m)} {fmt_mean_se(a, b)}" for m, a, b in
                           zip(cost["primary_metric"], cost["test_mean"], cost["test_se"])],
        "Trainable parameters (% of the model)": [fmt_params(t, p) for t, p in
                                                  zip(cost["trainable_params"], cost["trainable_percent"])],
        "Seconds per job": [fmt(v, 1) for v in cost["seconds_per_job"]],
        "Training s": [fmt(v, 1) for v in cost["train_seconds"]],
        "Peak memory (MiB)": [fmt(v, 0) for v in cost["peak_memory_mb"]],
    })
    measured = sorted({m for v in cost["peak_memory_of"].dropna() for m in str(v).split(" / ")})
    caption = ("What each strategy costs beside what it scores, at its selected learning rate, over its seeds: the "
               "parameters that train (the most in any epoch; 0 for knn, which trains nothing) and their share of "
               "the model (adapters included), the seconds a job takes (all of it, and its training or k-NN fit), "
               "and the highest peak memory of its jobs"
               + (f" ({', '.join(measured)})" if measured else "") + ".\n\n")
    return caption + markdown(md)
