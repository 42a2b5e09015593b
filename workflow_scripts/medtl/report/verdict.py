"""One verdict across datasets (issue 21, item 3): over every (dataset, architecture) cell of the study, which
strategies differ, by well-kept libraries rather than statistics of our own.

- the Friedman test (``scipy.stats.friedmanchisquare``) over the cells, with each strategy's average rank;
- Nemenyi's post-hoc test and its critical-difference diagram (``scikit_posthocs.posthoc_nemenyi_friedman``,
  ``scikit_posthocs.critical_difference_diagram``);
- each strategy against the reference (FT) by the Bayesian signed-rank test with a region of practical
  equivalence (``baycomp.SignedRankTest``);
- per modality, the strategies not significantly worse than the best (Friedman, then Nemenyi against the
  strategy of best average rank).

A cell's value is the mean over seeds of the test primary metric at the learning rate selected on validation
(``selected.csv``). Only strategies with a score in every cell take part (the tests need complete blocks);
the cells are those where the reference was run. What is left out is said under every table.

Written by :func:`write_verdict` into the classification report's folder: ``verdict_friedman.csv|md``,
``figures/critical_difference.png``, ``verdict_bayes.csv|md`` and ``verdict_modality.csv|md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtl.io import atomic_path
from .declaration import REPORT
from .outputs import ReportFiles, report_files

# a dataset's modality when the config's report.modality does not name one: by the dataset's registry type
DEFAULT_MODALITY = {
    "chexpert": "chest X-ray", "chestxray14": "chest X-ray", "vindr_cxr": "chest X-ray", "tbx11k": "chest X-ray",
    "nih_cxr14_bbox": "chest X-ray", "chexmask": "chest X-ray",
    "ham10000": "dermoscopy", "isic2020": "dermoscopy",
    "mura": "musculoskeletal X-ray", "bach": "histopathology", "brain_tumor_mri": "brain MRI",
    "cholect50": "laparoscopic video",
    "synth_cxr": "synthetic grayscale (CXR-like)", "synth_derm": "synthetic RGB (dermoscopy-like)",
}
MIN_CELLS_MODALITY = 3  # fewer cells in a modality: "too few cells", no verdict

FILES = ("verdict_friedman.csv", "verdict_friedman.md", "verdict_bayes.csv", "verdict_bayes.md",
         "verdict_modality.csv", "verdict_modality.md", "figures/critical_difference.png")


@dataclass
class Scores:
    """Cells x strategies: rows indexed by (dataset, arch), one column per strategy."""
    matrix: pd.DataFrame
    notes: list[str] = field(default_factory=list)  # what was left out, and why


def modality_of(dataset: str, dataset_types: dict | None = None, modality: dict | None = None) -> str:
    """The config's ``report.modality`` entry, else the default of the dataset's registry type, else its name."""
    if modality and dataset in modality:
        return str(modality[dataset])
    kind = (dataset_types or {}).get(dataset, dataset)
    return DEFAULT_MODALITY.get(kind, DEFAULT_MODALITY.get(dataset, f"{dataset} (no modality declared)"))


def score_matrix(selected: pd.DataFrame, reference: str, strategies: list[str]) -> Scores:
    """The test primary metric (mean over seeds, selected lr) of each cell and strategy among ``strategies``,
    restricted to the cells where ``reference`` has a score and the strategies with a score in all of them."""
    notes = []
    rows = selected[selected["strategy"].isin(strategies)]
    values = [r[f"test_{r['primary_metric']}_mean"] for _, r in rows.iterrows()]
    long = rows[["dataset", "arch", "strategy"]].assign(value=pd.to_numeric(pd.Series(values, index=rows.index),
                                                                            errors="coerce"))
    wide = long.pivot_table(index=["dataset", "arch"], columns="strategy", values="value", aggfunc="first",
                            dropna=False)
    wide = wide.reindex(columns=[s for s in strategies if s in wide.columns])
    if reference in wide.columns:
        without = wide.index[wide[reference].isna()]
        if len(without):
            notes.append(f"Cells without a {reference} score, left out: "
                         + ", ".join(f"{d}/{a}" for d, a in without) + ".")
        wide = wide[wide[reference].notna()]
    else:
        notes.append(f"The reference {reference} has no score: no cell can be compared with it.")
        wide = wide.iloc[0:0]
    partial = [s for s in wide.columns if wide[s].isna().any()]
    if partial:
        notes.append("Strategies without a score in every cell, left out (the tests need every strategy in every "
                     "cell): " + ", ".join(f"{s} ({int(wide[s].notna().sum())} of {len(wide)} cells)"
                                           for s in partial) + ".")
    return Scores(wide.drop(columns=partial), notes)


def average_ranks(matrix: pd.DataFrame) -> pd.Series:
    """Per strategy, its rank within each cell (1 = highest score, ties share the mean rank), averaged."""
    return matrix.rank(axis=1, ascending=False, method="average").mean(axis=0)


def friedman(matrix: pd.DataFrame) -> tuple[float, float, str]:
    """(statistic, p, note): scipy's Friedman test over the cells (rows); NaN and a note when it cannot run."""
    from scipy.stats import friedmanchisquare

    n, k = matrix.shape
    if n < 2 or k < 3:
        return math.nan, math.nan, (f"not enough cells: {n} cell(s) and {k} strategies (the Friedman test needs "
                                    f"at least 2 cells and 3 strategies)")
    if (matrix.nunique(axis=1) <= 1).all():
        return math.nan, math.nan, "every strategy scores the same in every cell: nothing to rank"
    stat, p = friedmanchisquare(*[matrix[c].to_numpy(dtype=float) for c in matrix.columns])
    return float(stat), float(p), ""


def nemenyi(matrix: pd.DataFrame) -> pd.DataFrame:
    """Nemenyi's post-hoc p-values after Friedman (scikit-posthocs), strategies x strategies."""
    import scikit_posthocs as sp

    return sp.posthoc_nemenyi_friedman(matrix.reset_index(drop=True))


def not_worse_than_best(matrix: pd.DataFrame, alpha: float) -> dict:
    """The strategy of best average rank and those not significantly worse than it: all of them when Friedman's
    p >= alpha, else those whose Nemenyi p against the best is >= alpha."""
    ranks = average_ranks(matrix)
    stat, p, note = friedman(matrix)
    out = {"n_cells": len(matrix), "k_strategies": matrix.shape[1], "friedman_statistic": stat, "friedman_p": p}
    if note:
        return {**out, "best_strategy": "", "not_worse": "", "test": "", "note": note}
    best = ranks.idxmin()
    if p >= alpha:
        keep = list(ranks.sort_values(kind="stable").index)
        test = f"Friedman p = {p:.3g} >= {alpha:g}: no strategy differs"
    else:
        pv = nemenyi(matrix)[best]
        keep = [s for s in ranks.sort_values(kind="stable").index if s == best or pv[s] >= alpha]
        test = f"Friedman p = {p:.3g} < {alpha:g}; Nemenyi against {best}, p >= {alpha:g}"
    return {**out, "best_strategy": best, "not_worse": ", ".join(keep), "test": test, "note": ""}


def friedman_table(matrix: pd.DataFrame, alpha: float) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """One row per strategy (best average rank first): average rank, mean score, the Friedman statistic and p,
    Nemenyi's p against the best; with the Nemenyi matrix (None when the test cannot run) and a note."""
    ranks = average_ranks(matrix)
    stat, p, note = friedman(matrix)
    pv = nemenyi(matrix) if not note else None
    order = list(ranks.sort_values(kind="stable").index)
    best = order[0] if order else ""
    rows = [{"strategy": s, "average_rank": float(ranks[s]), "mean_score": float(matrix[s].mean()),
             "n_cells": len(matrix), "k_strategies": matrix.shape[1], "friedman_statistic": stat, "friedman_p": p,
             "nemenyi_p_vs_best": float(pv.loc[s, best]) if pv is not None else math.nan,
             "not_worse_than_best": (bool(p >= alpha or pv.loc[s, best] >= alpha) if pv is not None else None),
             "note": note} for s in order]
    if not rows:
        rows = [{"strategy": "", "average_rank": math.nan, "mean_score": math.nan, "n_cells": len(matrix),
                 "k_strategies": 0, "friedman_statistic": stat, "friedman_p": p, "nemenyi_p_vs_best": math.nan,
                 "not_worse_than_best": None, "note": note}]
    return pd.DataFrame(rows), pv, note


def bayes_table(matrix: pd.DataFrame, reference: str, rope: float, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Each strategy against ``reference`` over the cells: baycomp's Bayesian signed-rank test with the region of
    practical equivalence ``rope`` (absolute difference of the primary metric): P(strategy better), P(practically
    equivalent), P(reference better), and the verdict (the probability >= 0.95, else undecided)."""
    import baycomp

    cols = ["strategy", "reference", "n_cells", "mean_difference", "p_strategy_better", "p_equivalent",
            "p_reference_better", "rope", "verdict", "note"]
    others = [s for s in matrix.columns if s != reference]
    n = len(matrix)
    if n < 2 or reference not in matrix.columns or not others:
        note = (f"not enough cells: {n} cell(s), {len(others)} strategies beside {reference} (the test needs at "
                f"least 2 cells and one strategy besides the reference)")
        return pd.DataFrame(columns=cols), note  # no row: the note says why
    rows = []
    ref = matrix[reference].to_numpy(dtype=float)
    for s in others:
        x = matrix[s].to_numpy(dtype=float)
        # baycomp: probs(x, y) = (P(x > y), P(rope), P(y > x)), beyond the rope
        better, equal, worse = baycomp.SignedRankTest.probs(x, ref, rope=rope, random_state=seed)
        probs = {"better": float(better), "equivalent": float(equal), f"{reference} better": float(worse)}
        top = max(probs, key=probs.get)
        rows.append({"strategy": s, "reference": reference, "n_cells": n, "mean_difference": float(np.mean(x - ref)),
                     "p_strategy_better": float(better), "p_equivalent": float(equal),
                     "p_reference_better": float(worse), "rope": rope,
                     "verdict": top if probs[top] >= 0.95 else "undecided", "note": ""})
    return pd.DataFrame(rows, columns=cols), ""


def modality_table(matrix: pd.DataFrame, modality: dict[str, str], alpha: float) -> pd.DataFrame:
    """Per modality (of each cell's dataset), the strategies not significantly worse than the best, and the test
    that says so; with fewer than MIN_CELLS_MODALITY cells, 'too few cells' rather than a verdict."""
    rows = []
    cell_modality = pd.Series([modality.get(d, d) for d, _ in matrix.index], index=matrix.index, dtype=object)
    for mod in sorted(set(cell_modality)):
        part = matrix[(cell_modality == mod).to_numpy()]
        datasets = ", ".join(sorted(set(part.index.get_level_values(0))))
        base = {"modality": mod, "datasets": datasets}
        if len(part) < MIN_CELLS_MODALITY:
            rows.append({**base, "n_cells": len(part), "k_strategies": part.shape[1], "friedman_statistic": math.nan,
                         "friedman_p": math.nan, "best_strategy": "", "not_worse": "", "test": "",
                         "note": f"too few cells ({len(part)} < {MIN_CELLS_MODALITY}): no verdict"})
        else:
            rows.append({**base, **not_worse_than_best(part, alpha)})
    cols = ["modality", "datasets", "n_cells", "k_strategies", "friedman_statistic", "friedman_p", "best_strategy",
            "not_worse", "test", "note"]
    if not rows:
        rows = [{"modality": "", "datasets": "", "n_cells": 0, "k_strategies": matrix.shape[1],
                 "note": "not enough cells: no cell to judge"}]
    return pd.DataFrame(rows, columns=cols)


def cd_diagram(matrix: pd.DataFrame, pv: pd.DataFrame | None, note: str, path: str | Path) -> None:
    """Nemenyi's critical-difference diagram (scikit-posthocs): average ranks on the axis, strategies joined by a
    bar where they do not differ significantly; when the test cannot run, a figure that says why."""
    fig = Figure(figsize=(8, max(2.5, 0.3 * matrix.shape[1] + 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if pv is None:
        ax.axis("off")
        ax.text(0.5, 0.5, f"No critical-difference diagram: {note}.", ha="center", va="center", wrap=True)
    else:
        import scikit_posthocs as sp

        sp.critical_difference_diagram(average_ranks(matrix), pv, ax=ax)
        ax.set_title(f"Average rank over {len(matrix)} cells (Nemenyi after Friedman)", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}" if abs(v) < 1e-3 and v else f"{v:.{digits}f}"
    return "" if v is None else str(v)


def _md_table(df: pd.DataFrame, cols: dict[str, str]) -> str:
    if df.empty:  # a table of headers only would show as an empty row: the note under it says why
        return "No rows (see the note below).\n"
    lines = ["| " + " | ".join(cols.values()) + " |", "|" + "---|" * len(cols)]
    for r in df.to_dict("records"):
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _notes_md(notes: list[str]) -> str:
    return ("\n" + "".join(f"- {n}\n" for n in notes)) if notes else ""


def write_verdict(selected: pd.DataFrame, out_dir: "str | Path | ReportFiles", reference: str, strategies: list[str],
                  settings: dict | None = None, dataset_types: dict | None = None) -> dict[str, str]:
    """Write the verdict's tables and figure to the classification report's files (or into the folder
    ``out_dir``); return {path relative to the report's folder: path}.

    ``strategies``: those to rank (the report leaves out the ones trained from scratch). ``settings``: the
    config's report section (:data:`medtl.report.declaration.REPORT`): ``confidence_level`` (alpha = 1 - level),
    ``rope``, ``bootstrap_seed`` (baycomp's sampling), ``modality`` ({dataset: modality}). ``dataset_types``:
    {dataset: registry type}, for the default modality."""
    settings = {**REPORT, **(settings or {})}  # the declared defaults under what the section sets
    alpha = 1 - float(settings["confidence_level"])
    rope = float(settings["rope"])
    seed = int(settings["bootstrap_seed"])
    files = report_files("classification", out_dir)
    written: dict[str, str] = {}

    def put(rel: str, obj) -> None:
        path = files(rel)
        with atomic_path(path) as tmp:
            obj.to_csv(tmp, index=False) if isinstance(obj, pd.DataFrame) else tmp.write_text(obj)
        written[rel] = str(path)

    scores = score_matrix(selected, reference, strategies)
    m = scores.matrix
    datasets = sorted(set(m.index.get_level_values(0))) if len(m) else []
    modality = {d: modality_of(d, dataset_types, settings["modality"]) for d in datasets}
    cells = f"{len(m)} (dataset, architecture) cells, {m.shape[1]} strategies: {', '.join(m.columns) or 'none'}"

    fr, pv, note = friedman_table(m, alpha)
    put("verdict_friedman.csv", fr)
    head = (f"Friedman test over {cells}: " + (f"statistic {_fmt(fr['friedman_statistic'].iloc[0])}, "
                                                f"p = {_fmt(fr['friedman_p'].iloc[0])}." if not note
                                                else f"**{note}**."))
    put("verdict_friedman.md", head + "\n\n" + _md_table(fr, {
        "strategy": "strategy", "average_rank": "average rank", "mean_score": "mean test score",
        "nemenyi_p_vs_best": "Nemenyi p vs best", "not_worse_than_best": f"not worse than best (alpha {alpha:g})"})
        + _notes_md(scores.notes))
    name = "figures/critical_difference.png"
    cd_diagram(m, pv, note, files(name))
    written[name] = str(files(name))

    by, note_b = bayes_table(m, reference, rope, seed)
    put("verdict_bayes.csv", by)
    head = (f"Bayesian signed-rank test (baycomp) of each strategy against {reference} over {cells}; region of "
            f"practical equivalence ±{rope:g}." + (f" **{note_b}**." if note_b else ""))
    put("verdict_bayes.md", head + "\n\n" + _md_table(by, {
        "strategy": "strategy", "mean_difference": f"mean difference vs {reference}",
        "p_strategy_better": "P(strategy better)", "p_equivalent": "P(practically equivalent)",
        "p_reference_better": f"P({reference} better)", "verdict": "verdict (P >= 0.95)"}) + _notes_md(scores.notes))

    mo = modality_table(m, modality, alpha)
    put("verdict_modality.csv", mo)
    put("verdict_modality.md", f"Which strategy for which modality, over {cells}; alpha {alpha:g}.\n\n" + _md_table(
        mo, {"modality": "modality", "datasets": "datasets", "n_cells": "cells", "best_strategy": "best (rank)",
             "not_worse": "not significantly worse than the best", "test": "test", "note": "note"})
        + _notes_md(scores.notes))
    return written


def report_section(written: dict[str, str]) -> str:
    """report.md's section of the verdict, each part headed by its caption."""
    from .document import caption

    parts = ["## One verdict across datasets\n"]
    for name, title in (("verdict_friedman", "Friedman test and average ranks"),
                        ("verdict_bayes", "Bayesian signed-rank test against the reference"),
                        ("verdict_modality", "Which strategy for which modality")):
        parts += [f"### {title}\n", caption(f"classification/{name}"),
                  f"[CSV]({name}.csv) · [Markdown]({name}.md)\n", Path(written[f"{name}.md"]).read_text()]
        if name == "verdict_friedman":
            parts += [caption("classification/critical_difference"),
                      "![Critical-difference diagram](figures/critical_difference.png)\n"]
    return "\n".join(parts)
