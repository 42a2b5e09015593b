"""Mean and standard error over seeds, and the learning rate each strategy is reported at.

Conventions (documented in report.md as well):

- standard error = sample standard deviation (ddof=1) / sqrt(n seeds); it is NaN when n = 1,
  since one seed says nothing about the spread;
- a NaN (or null) score in any seed makes that group's mean and SE NaN: a mean over fewer seeds
  than the others would look comparable while it is not;
- the learning rate of each (dataset, arch, strategy) is the one with the best mean *validation*
  primary metric; NaN means rank last, ties go to the smaller learning rate. When it is NaN at every one of
  several learning rates, none is selected (``lr_selection`` "undefined"): the group's test scores are NaN
  rather than those of an arbitrary rate (report.md names such groups).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .collect import SPLITS, Runs

GROUP = ["dataset", "arch", "strategy"]
#: ``lr_selection`` of a group with one learning rate, and of one whose validation means are all NaN
SINGLE, UNDEFINED = "single lr", "undefined"


def mean_se(values) -> tuple[float, float]:
    """(mean, standard error) of one group's seeds; NaN-propagating, SE NaN for a single seed."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0 or np.isnan(x).any():
        return math.nan, math.nan
    mean = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return mean, se


def aggregate(runs: Runs) -> pd.DataFrame:
    """One row per (dataset, arch, strategy, lr): seed count and mean/SE of every metric."""
    rows = []
    for (ds, arch, strategy, lr), group in runs.table.groupby([*GROUP, "lr"], sort=True):
        row = {"dataset": ds, "arch": arch, "strategy": strategy, "primary_metric": runs.primary[ds],
               "lr": float(lr), "n_seeds": len(group),
               "seeds": " ".join(str(s) for s in sorted(group["seed"]))}
        for split in SPLITS:
            for m in runs.metrics:
                row[f"{split}_{m}_mean"], row[f"{split}_{m}_se"] = mean_se(group[f"{split}_{m}"])
        rows.append(row)
    return pd.DataFrame(rows)


def select_lr(per_lr: pd.DataFrame) -> pd.DataFrame:
    """The row of each (dataset, arch, strategy) whose lr has the best mean validation primary metric."""
    chosen = []
    for _, group in per_lr.groupby(GROUP, sort=True):
        primary = group["primary_metric"].iloc[0]
        val = group[f"val_{primary}_mean"].to_numpy(dtype=np.float64)
        lrs = group["lr"].to_numpy(dtype=np.float64)
        # sort key: finite before NaN, higher score first, then the smaller lr
        order = sorted(range(len(group)), key=lambda i: (bool(np.isnan(val[i])), -val[i] if not np.isnan(val[i])
                                                         else 0.0, lrs[i]))
        row = group.iloc[order[0]].to_dict()
        if len(group) == 1:
            row["lr_selection"] = SINGLE
        elif np.isnan(val).all():  # selecting on NaN would pick an arbitrary rate: nothing to report
            row["lr_selection"] = UNDEFINED
            for col in row:
                if col.startswith("test_") and (col.endswith("_mean") or col.endswith("_se")):
                    row[col] = math.nan
        else:
            row["lr_selection"] = "validation"
        row["n_lrs"] = len(group)
        row["lrs_tried"] = " ".join(f"{v:g}" for v in sorted(lrs))
        chosen.append(row)
    out = pd.DataFrame(chosen)
    front = [*GROUP, "primary_metric", "lr", "n_seeds", "seeds", "n_lrs", "lrs_tried", "lr_selection"]
    return out[front + [c for c in out.columns if c not in front]].reset_index(drop=True)
