"""Relative-improvement figures. Uses matplotlib's object API with the Agg canvas: no pyplot, no
global backend switch, no display, and only the fonts matplotlib ships with."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtl.io import atomic_path

from .tables import label, left_out


def _save(fig: Figure, path: str | Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _matrix(rel: pd.DataFrame, rows: list[str], cols: list[tuple[str, str]]) -> np.ndarray:
    lookup = {(r["dataset"], r["arch"], r["strategy"]): r["relative_improvement_pct"] for r in rel.to_dict("records")}
    values = [[lookup.get((d, a, s), math.nan) for d, a in cols] for s in rows]
    return np.array(values, dtype=np.float64).reshape(len(rows), len(cols))


def _footnote(fig: Figure, lines: list[str]) -> None:
    """What the figure leaves out, and why, under it (the same sentences as in report.md)."""
    if lines:
        import textwrap

        text = "\n".join(textwrap.fill(line, 110) for line in lines)
        renderer = FigureCanvasAgg(fig).get_renderer()  # below everything drawn: tick labels, axis labels
        bottom = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes)
        y = fig.transFigure.inverted().transform((0.0, bottom))[1]
        fig.text(0.0, y - 0.03, text, ha="left", va="top", fontsize=7)


def dataset_bars(rel: pd.DataFrame, dataset: str, archs: list[str], strategies: list[str], reference: str,
                 path: str | Path) -> list[str]:
    """Grouped bars: one group per strategy (reference left out: it is 0 by definition), one bar per arch.
    Strategies and architectures without any value (no reference to compare with) are left out; the
    sentences naming them are written under the figure and returned."""
    part = rel[rel["dataset"] == dataset]
    archs = [a for a in archs if a in set(part["arch"])]
    others = [s for s in strategies if s != reference and s in set(part["strategy"])]
    shown = left_out(part, others, [(dataset, a) for a in archs], reference)
    notes = shown.sentences("strategies", "architectures")
    others, archs = shown.strategies, [a for _, a in shown.pairs]
    primary = part["primary_metric"].iloc[0] if len(part) else ""
    values = _matrix(part, others, [(dataset, a) for a in archs])  # strategies x archs
    fig = Figure(figsize=(max(5.0, 0.9 * len(others) * max(1, len(archs)) ** 0.5 + 2), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(archs))
    x = np.arange(len(others))
    for j, arch in enumerate(archs):
        ax.bar(x + (j - (len(archs) - 1) / 2) * width, np.nan_to_num(values[:, j], nan=0.0), width, label=arch)
        for i in np.flatnonzero(np.isnan(values[:, j])):
            ax.text(x[i] + (j - (len(archs) - 1) / 2) * width, 0, "n/a", ha="center", va="bottom", fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, others, rotation=30, ha="right")
    ax.set_xlabel("Strategy")
    ax.set_ylabel(f"Change vs {reference}, test {label(primary)} (%)")
    ax.set_title(f"{dataset}: relative improvement over {reference}")
    if not others:
        ax.text(0.5, 0.5, f"nothing to compare with {reference}", ha="center", va="center", transform=ax.transAxes)
    if archs and others:
        ax.legend(title="Architecture", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _footnote(fig, notes)
    _save(fig, path)
    return notes


def overview_heatmap(rel: pd.DataFrame, datasets: list[str], archs: list[str], strategies: list[str],
                     reference: str, path: str | Path) -> list[str]:
    """Heatmap: strategies x (dataset, arch), colour = % change vs the reference, value written in each cell.
    Rows and columns without any value (a strategy that never ran beside the reference, a pair without a
    reference run) are left out; the sentences naming them are written under the figure and returned."""
    pairs = [(d, a) for d in datasets for a in archs
             if ((rel["dataset"] == d) & (rel["arch"] == a)).any()]
    others = [s for s in strategies if s != reference]
    shown = left_out(rel, others, pairs, reference)
    notes = shown.sentences("rows", "columns")
    others, pairs = shown.strategies, shown.pairs
    values = _matrix(rel, others, pairs)
    finite = values[np.isfinite(values)]
    vmax = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    fig = Figure(figsize=(max(5.0, 0.8 * len(pairs) + 3), max(3.0, 0.45 * len(others) + 2)))
    ax = fig.add_subplot()
    if values.size == 0:
        ax.text(0.5, 0.5, f"nothing to compare with {reference}", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(f"Relative improvement over {reference} (%)")
        _footnote(fig, notes)
        _save(fig, path)
        return notes
    cmap = colormaps["RdBu"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:+.1f}", ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(v) and abs(v) > 0.6 * vmax else "black")
    ax.set_xticks(range(len(pairs)), [f"{d} / {a}" for d, a in pairs], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(others)), others)
    ax.set_xlabel("Dataset / architecture")
    ax.set_ylabel("Strategy")
    ax.set_title(f"Relative improvement over {reference} on each dataset's test primary metric (%)")
    fig.colorbar(image, ax=ax, label=f"% change vs {reference}")
    _footnote(fig, notes)
    _save(fig, path)
    return notes
