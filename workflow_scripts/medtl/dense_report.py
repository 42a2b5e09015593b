"""What the detection and segmentation reports share: reading the jobs' metrics files,
mean and standard error over seeds, "mean ± se" tables, saving figures.

Conventions are the classification report's (``medtl.report.select``): standard error =
sample standard deviation / sqrt(n seeds), NaN for one seed; a missing score in any seed
makes that group's mean NaN rather than a mean over fewer seeds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.io import atomic_path
from medtl.report.select import mean_se
from medtl.report.tables import fmt_mean_se

KEY = ("dataset", "model", "strategy", "seed")


def load_runs(metric_files: list[str], task: str, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per job: its key, ``val_*``/``test_*`` scores, epochs and time. Refuses duplicates,
    metrics files of another task and files lacking a key."""
    rows, seen = [], {}
    for path in map(str, metric_files):
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: metrics file is missing (did its training job finish?)") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); delete it and rerun its job") from None
        if data.get("task") != task:
            raise ValueError(f"{path}: a {data.get('task')!r} metrics file in the {task} report")
        missing = [k for k in (*KEY, "val", "test") if k not in data]
        if missing:
            raise ValueError(f"{path}: lacks {missing}")
        key = tuple(data[k] for k in KEY)
        if key in seen:
            raise ValueError(f"{path}: duplicate job {dict(zip(KEY, key))}, already read from {seen[key]}")
        seen[key] = path
        row = {k: data[k] for k in KEY}
        for split in ("val", "test"):
            for name, value in data[split].items():
                if metrics is None or name in metrics:
                    row[f"{split}_{name}"] = math.nan if value is None else float(value)
        row.update(best_epoch=data.get("best_epoch"), epochs_run=data.get("epochs_run"),
                   seconds=data.get("seconds"), device=data.get("device"), file=path)
        rows.append(row)
    if not rows:
        raise ValueError(f"no {task} metrics files given")
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, columns: list[str], group=("dataset", "model", "strategy")) -> pd.DataFrame:
    """Mean and SE over seeds of each column, one row per group."""
    out = []
    for key, part in runs.groupby(list(group), sort=False):
        row = dict(zip(group, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = len(part)
        row["seeds"] = " ".join(str(s) for s in sorted(part["seed"]))
        for col in columns:
            values = part[col] if col in part else pd.Series([math.nan] * len(part))
            row[f"{col}_mean"], row[f"{col}_se"] = mean_se(values.to_numpy(dtype=np.float64))
        out.append(row)
    return pd.DataFrame(out)


def order_rows(df: pd.DataFrame, model_order: list[str] | None, strategy_order: list[str] | None) -> pd.DataFrame:
    """Datasets sorted, models and strategies in config order (unknown names after, sorted)."""
    def rank(order):
        order = list(order or [])
        return lambda s: s.map(lambda v: (order.index(v) if v in order else len(order), v))

    df = df.copy()
    df["_m"] = rank(model_order)(df["model"])
    df["_s"] = rank(strategy_order)(df["strategy"])
    return df.sort_values(["dataset", "_m", "_s"]).drop(columns=["_m", "_s"]).reset_index(drop=True)


def mean_se_table(summary: pd.DataFrame, columns: dict[str, str], decimals: int = 3,
                  best_within=("dataset",)) -> pd.DataFrame:
    """Display table: Model, Strategy, Seeds, then "mean ± se" per column; the best mean of each
    column within ``best_within`` groups (a dataset) in bold, ties all bold."""
    out = summary[["dataset", "model", "strategy", "n_seeds"]].rename(
        columns={"dataset": "Dataset", "model": "Model", "strategy": "Strategy", "n_seeds": "Seeds"}).copy()
    for col, label in columns.items():
        means, ses = summary[f"{col}_mean"], summary[f"{col}_se"]
        best = summary.assign(_v=means).groupby(list(best_within))["_v"].transform("max")
        out[label] = [("**{}**" if math.isfinite(m) and m == b else "{}").format(fmt_mean_se(m, s, decimals))
                      for m, s, b in zip(means, ses, best)]
    return out


def markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True) + "\n"


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    """Agg canvas (no pyplot, no display, only the fonts matplotlib ships), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def show_image(ax, image: np.ndarray) -> None:
    img = np.asarray(image)
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
