"""The metrics of :mod:`medtl.metrics` on weighted samples, vectorised over bootstrap resamples.

A resample of the test images is a weight per image (how often it was drawn); :func:`weighted_metric`
scores every resample at once, with numpy, where calling scikit-learn once per resample would be ~100-1000x
slower (1,000 resamples x strategies x seeds x metrics x classes). Its definitions are those of
:mod:`medtl.metrics`, which stays the one reference: :func:`resampled_metric` scores each resample with
``medtl.metrics.compute(..., sample_weight=...)`` (scikit-learn's ``sample_weight``), and
:func:`check_consistency` holds the vectorised numbers to it on the data of every report, which falls back
to ``compute`` where they differ (tests/test_statistics.py and tests/test_significance.py check every metric
and task).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from medtl import metrics as M


# ``w`` is (B, n): how often each image is in each resample. With integer weights each function equals
# medtl.metrics.compute on the rows repeated that often (tests/test_significance.py checks every metric
# and task; check_consistency checks it again on the data of every report).
def _safe_div(a: np.ndarray, b: np.ndarray, fill: float = math.nan) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = a / b
    return np.where(b > 0, out, fill)


def _auroc_w(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC (ties count one half) of one class; NaN without both classes."""
    order = np.argsort(s, kind="mergesort")
    s, pos, ws = s[order], y[order].astype(bool), w[:, order]
    start = np.r_[True, s[1:] != s[:-1]]
    gid = np.cumsum(start) - 1
    starts = np.flatnonzero(start)
    ends = np.r_[starts[1:], len(s)]
    cum = np.concatenate([np.zeros((len(w), 1)), np.cumsum(ws * ~pos, axis=1)], axis=1)
    below, tied = cum[:, starts], cum[:, ends] - cum[:, starts]
    g = gid[pos]
    wp = ws[:, pos]
    num = (wp * (below[:, g] + 0.5 * tied[:, g])).sum(axis=1)
    n_pos, n_neg = wp.sum(axis=1), cum[:, -1]
    both = (n_pos > 0) & (n_neg > 0)
    return np.where(both, _safe_div(num, n_pos * n_neg), math.nan)


def _ap_w(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision Σ (R_t − R_{t−1}) P_t over distinct thresholds, as scikit-learn; NaN without both classes."""
    order = np.argsort(-s, kind="mergesort")
    s, pos, ws = s[order], y[order].astype(bool), w[:, order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(ws * pos, axis=1)[:, last]
    fp = np.cumsum(ws * ~pos, axis=1)[:, last]
    precision = _safe_div(tp, tp + fp, fill=0.0)
    recall = _safe_div(tp, tp[:, -1:], fill=0.0)
    d_recall = np.diff(recall, axis=1, prepend=0.0)
    n_pos, n_neg = tp[:, -1], fp[:, -1]
    both = (n_pos > 0) & (n_neg > 0)
    return np.where(both, (d_recall * precision).sum(axis=1), math.nan)


def _nanmean_cols(values: list[np.ndarray]) -> np.ndarray:
    arr = np.stack(values, axis=1) if values else np.full((0, 0), math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(arr, axis=1)


def _confusion(t: np.ndarray, pred: np.ndarray, k: int, w: np.ndarray) -> np.ndarray:
    onehot = np.zeros((len(t), k * k))
    onehot[np.arange(len(t)), t * k + pred] = 1.0
    return (w @ onehot).reshape(len(w), k, k)


def _kappa(conf: np.ndarray) -> np.ndarray:
    n = conf.sum(axis=(1, 2))
    po = _safe_div(np.trace(conf, axis1=1, axis2=2), n)
    pe = _safe_div((conf.sum(axis=2) * conf.sum(axis=1)).sum(axis=1), n * n)
    return 1.0 - _safe_div(1.0 - po, 1.0 - pe)


def _balanced_accuracy(conf: np.ndarray) -> np.ndarray:
    """Mean recall over the classes with images (rows of ``conf``: true class), as scikit-learn's
    ``balanced_accuracy_score``."""
    support = conf.sum(axis=2)
    return _nanmean_cols(list(_safe_div(np.diagonal(conf, axis1=1, axis2=2), support).T))


def weighted_metric(task: str, name: str, y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``name`` (a :data:`medtl.metrics.METRICS` entry) of each weighted resample: shape (B,)."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    classes = range(y.shape[1])
    if name in ("auroc", "map"):
        fn = _auroc_w if name == "auroc" else _ap_w
        cols = [1] if task == "binary" else classes
        return _nanmean_cols([fn(y[:, c], p[:, c], w) for c in cols])
    total = w.sum(axis=1)
    if task == "multilabel":
        pred = (p >= 0.5).astype(np.int64)
        if name == "accuracy":
            return _safe_div(w @ (pred == y).mean(axis=1), total)
        if name == "macro_f1":  # a class with F1 0/0 (no positive, none predicted) is left out, as in medtl.metrics
            tp, fp, fn = w @ (y & pred), w @ ((1 - y) & pred), w @ (y & (1 - pred))
            return _nanmean_cols(list(_safe_div(2 * tp, 2 * tp + fp + fn).T))
        if name in ("kappa", "balanced_accuracy"):  # a class without positive or without negative images is left out
            n_pos = w @ y
            per = _kappa if name == "kappa" else _balanced_accuracy
            return _nanmean_cols([np.where((n_pos[:, c] > 0) & (n_pos[:, c] < total),
                                           per(_confusion(y[:, c], pred[:, c], 2, w)), math.nan) for c in classes])
    else:
        k = y.shape[1]
        t, pred = y.argmax(axis=1), p.argmax(axis=1)
        if name == "accuracy":
            return _safe_div(w @ (t == pred).astype(np.float64), total)
        conf = _confusion(t, pred, k, w)
        if name == "kappa":
            return _kappa(conf)
        if name == "balanced_accuracy":
            return _balanced_accuracy(conf)
        if name == "macro_f1":
            tp = np.diagonal(conf, axis1=1, axis2=2)
            return _nanmean_cols(list(_safe_div(2 * tp, conf.sum(axis=2) + conf.sum(axis=1)).T))
    raise ValueError(f"unknown metric '{name}'; known: {M.METRICS}")


def resampled_metric(task: str, name: str, y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The reference: ``medtl.metrics.compute`` of each resample, its weights as ``sample_weight`` (with
    integer weights: the metric of the rows repeated that often)."""
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    return np.array([M.compute(task, y, p, [name], sample_weight=wb)[name] for wb in w], dtype=np.float64)


def check_consistency(task: str, name: str, y: np.ndarray, p: np.ndarray, rng: np.random.Generator,
                      n_checks: int = 3) -> bool:
    """Does :func:`weighted_metric` equal ``medtl.metrics.compute`` on this data (all rows, and a few
    resamples)? The report falls back to ``compute`` on repeated rows for a metric where it does not."""
    n = len(y)
    w = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1.0 / n), size=n_checks)])
    fast, slow = weighted_metric(task, name, y, p, w), resampled_metric(task, name, y, p, w)
    return bool(np.allclose(fast, slow, rtol=1e-9, atol=1e-12, equal_nan=True))
