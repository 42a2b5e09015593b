"""Confidence intervals for every reported cell and paired comparisons with the reference strategy,
computed from the per-image predictions every training job keeps (``predictions.parquet``).

Method (the same text is in report.md and the README):

- **Resampling units.** Test images are resampled by patient when the dataset has patient (group)
  ids, otherwise image by image. Units are stratified by class (single-label: the unit's most frequent
  class; multi-label: the rarest class it is positive for, or "no finding"), so every resample keeps the
  class counts; strata with fewer than ``min_stratum`` units are pooled.
- **Test images.** :func:`scipy.stats.bootstrap` (percentile method) with one sample per stratum, which
  scipy resamples independently: a stratified (cluster) bootstrap. One draw serves every strategy and seed
  of a (dataset, architecture), so comparisons are paired on the same images. A cell is the mean over
  seeds of the metric of :mod:`medtl.metrics`, computed with the resample's multiplicities as weights
  (:func:`weighted_metric`; :func:`check_consistency` holds it to ``medtl.metrics.compute`` on the data
  at hand and falls back to ``compute`` itself on repeated rows).
- **Seeds.** The variation between seeds is combined with the bootstrap: the interval's half-widths are
  widened in quadrature by the seeds' t-interval half-width ``t(S − 1) · SE``, SE the table's standard
  error over seeds (for a comparison: of the per-seed paired differences). Resampling 2-3 seeds instead
  would understate it badly; with one seed the interval is the bootstrap's alone.
- **Paired test** of each strategy against the reference on the dataset's primary metric: the difference
  of the two cells with its interval, and the p-value that inverts the interval (the smallest 1 − level
  at which it excludes 0; without a seed part, ``2 · min(P*(d ≤ 0), P*(d ≥ 0))`` with (1 + count) /
  (1 + B)). For a binary AUROC without clustered test images, DeLong's test gives the images' part
  instead (fast DeLong, Sun & Xu 2014, over all seeds of both strategies at once).
- **Multiple comparisons.** Holm's correction over the strategies compared with the reference within
  each (dataset, architecture) (``statsmodels.stats.multitest.multipletests``). A difference is
  *significant* when its Holm-adjusted p-value is below 1 − confidence level. Strategies trained from scratch
  (``random_init``: the reference that says whether transfer helps) are a family of their own: their test asks
  another question, and adding one changes no other strategy's adjusted p-value.
"""
from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtl import metrics as M

UNIT_PATIENT, UNIT_IMAGE = "patients", "images"
BOOTSTRAP, DELONG = "paired bootstrap", "DeLong"


@dataclass
class Settings:
    n_resamples: int = 1000
    confidence_level: float = 0.95
    seed: int = 0
    min_stratum: int = 5         # strata with fewer units are pooled
    max_batch_elements: int = 4_000_000  # resamples x images held at once

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence_level

    @classmethod
    def from_config(cls, report: dict | None) -> "Settings":
        report = report or {}
        return cls(n_resamples=int(report.get("bootstrap_resamples", cls.n_resamples)),
                   confidence_level=float(report.get("confidence_level", cls.confidence_level)),
                   seed=int(report.get("bootstrap_seed", cls.seed)))


# -- metrics of weighted samples, vectorised over resamples ------------------------------------------
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
    """The slow reference: ``medtl.metrics.compute`` on each resample's repeated rows."""
    rows = np.arange(len(y))
    out = np.empty(len(w))
    for b, counts in enumerate(np.asarray(w).round().astype(np.int64)):
        idx = np.repeat(rows, counts)
        out[b] = M.compute(task, y[idx], p[idx], [name])[name]
    return out


def check_consistency(task: str, name: str, y: np.ndarray, p: np.ndarray, rng: np.random.Generator,
                      n_checks: int = 3) -> bool:
    """Does :func:`weighted_metric` equal ``medtl.metrics.compute`` on this data (all rows, and a few
    resamples)? The report falls back to ``compute`` on repeated rows for a metric where it does not."""
    n = len(y)
    w = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1.0 / n), size=n_checks)])
    fast, slow = weighted_metric(task, name, y, p, w), resampled_metric(task, name, y, p, w)
    return bool(np.allclose(fast, slow, rtol=1e-9, atol=1e-12, equal_nan=True))


# -- resampling design: units (patients or images) and class strata ----------------------------------
@dataclass
class Design:
    unit_of_image: np.ndarray      # (n,) unit index of each image
    strata: list[np.ndarray]       # unit indices of each stratum
    kind: str                      # UNIT_PATIENT or UNIT_IMAGE

    @property
    def n_units(self) -> int:
        return int(self.unit_of_image.max()) + 1 if len(self.unit_of_image) else 0

    @property
    def clustered(self) -> bool:
        return self.n_units < len(self.unit_of_image)


def design(y: np.ndarray, groups, task: str, min_stratum: int = 5) -> Design:
    """Units: patients where the images have group ids (an image without one is its own unit); strata:
    the unit's class (see the module docstring), strata under ``min_stratum`` units pooled."""
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    groups = np.asarray(["" if g is None else str(g) for g in groups] if groups is not None else [""] * n)
    keys = np.where(groups == "", np.char.add("\x00image", np.arange(n).astype(str)), groups)
    _, unit = np.unique(keys, return_inverse=True)
    n_units = int(unit.max()) + 1 if n else 0
    per_unit = np.zeros((n_units, y.shape[1]))
    np.add.at(per_unit, unit, y)
    if task == "multilabel":
        prevalence = (per_unit > 0).sum(axis=0)
        rank = np.argsort(np.argsort(prevalence, kind="stable"), kind="stable")  # 0 = rarest class
        masked = np.where(per_unit > 0, rank[None, :], y.shape[1] + 1)
        label = np.where((per_unit > 0).any(axis=1), masked.argmin(axis=1), -1)
    else:
        label = per_unit.argmax(axis=1)
    strata = [np.flatnonzero(label == v) for v in np.unique(label)]
    big = [s for s in strata if len(s) >= min_stratum]
    small = [s for s in strata if len(s) < min_stratum]
    if small:
        pooled = np.concatenate(small)
        if len(pooled) >= min_stratum or not big:
            big.append(pooled)
        else:  # too few even together: into the largest stratum
            i = int(np.argmax([len(s) for s in big]))
            big[i] = np.sort(np.concatenate([big[i], pooled]))
    return Design(unit_of_image=unit, strata=big, kind=UNIT_PATIENT if n_units < n else UNIT_IMAGE)


# -- DeLong's test for paired AUROCs -------------------------------------------------------------------
def delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``scores`` (k, n) against binary ``y`` (n,) and their covariance (k, k): the fast
    algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11)) for DeLong et al. (1988)."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    x, z = scores[:, y], scores[:, ~y]
    m, n = x.shape[1], z.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least two positives and two negatives, got {m} and {n}")
    tx = rankdata(x, axis=1)
    tz = rankdata(z, axis=1)
    t = rankdata(np.concatenate([x, z], axis=1), axis=1)
    auc = (t[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (t[:, :m] - tx) / n          # structural components of the positives
    v01 = 1.0 - (t[:, m:] - tz) / m    # and of the negatives
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


def delong_paired(y: np.ndarray, a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Seed-mean AUROC of ``a`` minus that of ``b`` (per-seed positive-class scores on the same images) and
    DeLong's standard error of that contrast of all the AUROCs (the test images' part of the variance; the
    seeds' part is :func:`seed_component`'s). Also each seed's AUROC (``auc_a``, ``auc_b``)."""
    auc, cov = delong(y, np.vstack([*a, *b]))
    c = np.r_[np.full(len(a), 1.0 / len(a)), np.full(len(b), -1.0 / len(b))]
    return {"diff": float(c @ auc), "se": math.sqrt(max(float(c @ cov @ c), 0.0)),
            "auc_a": auc[:len(a)], "auc_b": auc[len(a):]}


def seed_component(a, b=None, paired: bool = True) -> tuple[float, int]:
    """Standard error of a mean over seeds from the spread between seeds, and its degrees of freedom:
    ``sd(a) / √S`` (S − 1 df); for a difference ``a − b``, that of the per-seed differences when ``paired``
    (same seeds), else √(var a / S_a + var b / S_b) with min(S_a, S_b) − 1 df. (0, 0) with one seed."""
    a = np.asarray(a, dtype=np.float64)
    if b is not None and paired:
        a, b = a - np.asarray(b, dtype=np.float64), None
    if b is None:
        return (float(a.std(ddof=1) / math.sqrt(len(a))), len(a) - 1) if len(a) > 1 else (0.0, 0)
    b = np.asarray(b, dtype=np.float64)
    var = sum(float(x.var(ddof=1)) / len(x) for x in (a, b) if len(x) > 1)
    df = min(len(a), len(b)) - 1
    return (math.sqrt(var), df) if df >= 1 else (0.0, 0)


def combine(estimate: float, low: float, high: float, seed_se: float, seed_df: int, level: float
            ) -> tuple[float, float]:
    """The test-image interval (low, high) widened by the seeds' t-interval half-width
    t(S − 1) · seed_se, half-widths added in quadrature; unchanged without a seed component."""
    if not (seed_se > 0 and seed_df >= 1 and math.isfinite(seed_se)):
        return low, high
    from scipy.stats import t

    h = float(t.ppf(0.5 + level / 2, seed_df)) * seed_se
    return estimate - math.hypot(max(estimate - low, 0.0), h), estimate + math.hypot(max(high - estimate, 0.0), h)


def inverted_p(estimate: float, image_interval, seed_se: float, seed_df: int) -> float:
    """Two-sided p-value of "no difference": the smallest 1 − level at which the combined interval
    (``image_interval(level)`` → (low, high), then :func:`combine`) excludes 0 (bisection)."""
    if not math.isfinite(estimate):
        return math.nan

    def excludes(alpha: float) -> bool:
        low, high = combine(estimate, *image_interval(1 - alpha), seed_se, seed_df, 1 - alpha)
        return low > 0 or high < 0

    if not excludes(1 - 1e-9):
        return 1.0
    lo, hi = 0.0, 1 - 1e-9
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if excludes(mid) else (mid, hi)
    return hi


def bootstrap_p(dist: np.ndarray) -> float:
    """Two-sided p-value of "difference = 0" by inverting the percentile interval of a bootstrap
    distribution: 2 · min(P*(d ≤ 0), P*(d ≥ 0)), each (1 + count) / (1 + B); 1 where d* is all zero."""
    d = np.asarray(dist, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return math.nan
    b = len(d)
    low, high = (1 + np.sum(d <= 0)) / (1 + b), (1 + np.sum(d >= 0)) / (1 + b)
    return float(min(1.0, 2 * min(low, high)))


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels); NaN stays NaN and is not counted as a comparison."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


# -- one (dataset, architecture): every strategy's cells and its comparison with the reference ------------
@dataclass
class Group:
    """The test predictions of one (dataset, architecture) at each strategy's selected learning rate."""
    task: str
    y: np.ndarray                       # (n, C) 0/1
    groups: np.ndarray | None           # (n,) patient ids or None
    scores: dict[str, dict[int, np.ndarray]]  # strategy -> seed -> (n, C) probabilities
    metrics: list[str]
    primary: str


@dataclass
class GroupResult:
    intervals: pd.DataFrame   # strategy, metric, estimate, ci_low, ci_high, ...
    paired: pd.DataFrame      # strategy vs reference on the primary metric (p not yet Holm-adjusted)
    notes: list[str] = field(default_factory=list)


def analyse_group(group: Group, reference: str | None, settings: Settings, rng: np.random.Generator,
                  name: str = "") -> GroupResult:
    """Intervals of every (strategy, metric) cell and, with a ``reference``, the paired difference of every
    other strategy on the primary metric (module docstring). The cells are seed means; the bootstrap
    resamples the test units (the same draws for every strategy and seed: paired on images), the seeds
    enter through :func:`seed_component` (paired on seeds where the strategies share them)."""
    from scipy.stats import bootstrap, norm

    notes: list[str] = []
    strategies = list(group.scores)
    seed_sets = {s: sorted(group.scores[s]) for s in strategies}
    y = np.asarray(group.y, dtype=np.int64)
    d = design(y, group.groups, group.task, settings.min_stratum)
    n, n_units = len(y), d.n_units
    level = settings.confidence_level

    fast = {}
    first = group.scores[strategies[0]][seed_sets[strategies[0]][0]]
    for m in group.metrics:
        fast[m] = check_consistency(group.task, m, y, first, np.random.default_rng(0))  # not the draws' stream
        if not fast[m]:
            notes.append(f"{name}: the vectorised {m} differs from medtl.metrics on these data; "
                         f"computed with medtl.metrics.compute on every resample (slower)")

    def metric_of(scores: np.ndarray, m: str, w: np.ndarray) -> np.ndarray:
        return (weighted_metric if fast[m] else resampled_metric)(group.task, m, y, scores, w)

    cells = [(s, m) for s in strategies for m in group.metrics]
    has_ref = reference is not None and reference in group.scores
    compared = [s for s in strategies if has_ref and s != reference]
    ones = np.ones((1, n))
    per_seed = {(s, m): np.array([metric_of(group.scores[s][k], m, ones)[0] for k in seed_sets[s]])
                for s, m in cells}

    def statistic(*strata, axis=-1):
        strata = [np.asarray(x) for x in strata]
        squeeze = strata[0].ndim == 1
        units = np.concatenate([x[None, :] if squeeze else x for x in strata], axis=1)
        b = len(units)
        counts = np.zeros((b, n_units))
        np.add.at(counts, (np.repeat(np.arange(b), units.shape[1]), units.ravel()), 1.0)
        w = counts[:, d.unit_of_image]
        values = {c: np.mean([metric_of(group.scores[c[0]][k], c[1], w) for k in seed_sets[c[0]]], axis=0)
                  for c in cells}
        out = [values[c] for c in cells]
        out += [values[(s, group.primary)] - values[(reference, group.primary)] for s in compared]
        out = np.stack(out)
        return out[:, 0] if squeeze else out

    data = [np.asarray(s) for s in d.strata]
    full = statistic(*data)  # the estimates: every unit once
    batch = max(1, min(settings.n_resamples, settings.max_batch_elements // max(1, n)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = bootstrap(data, statistic, n_resamples=settings.n_resamples, batch=batch, vectorized=True,
                        paired=False, confidence_level=level, method="percentile", rng=rng)
    low, high = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    dist = np.atleast_2d(res.bootstrap_distribution)

    rows = []
    for i, (s, m) in enumerate(cells):
        seed_se, seed_df = seed_component(per_seed[(s, m)])
        lo, hi = combine(full[i], low[i], high[i], seed_se, seed_df, level)
        rows.append({"strategy": s, "metric": m, "estimate": full[i], "ci_low": lo, "ci_high": hi,
                     "image_ci_low": low[i], "image_ci_high": high[i], "seed_se": seed_se,
                     "confidence_level": level, "resampled": d.kind, "n_images": n, "n_units": n_units,
                     "n_seeds": len(seed_sets[s]), "n_resamples": settings.n_resamples})
    intervals = pd.DataFrame(rows)

    rows = []
    use_delong = group.task == "binary" and group.primary == "auroc" and not d.clustered
    if group.task == "binary" and group.primary == "auroc" and d.clustered and compared:
        notes.append(f"{name}: test images are clustered by patient; the paired bootstrap (by patient) is used "
                     "instead of DeLong's test, which assumes independent images")
    for j, s in enumerate(compared):
        i = len(cells) + j
        same = seed_sets[s] == seed_sets[reference]
        seed_se, seed_df = seed_component(per_seed[(s, group.primary)], per_seed[(reference, group.primary)],
                                          paired=same)
        if use_delong:
            r = delong_paired(y[:, 1], [group.scores[s][k][:, 1] for k in seed_sets[s]],
                              [group.scores[reference][k][:, 1] for k in seed_sets[reference]])
            est, se = r["diff"], r["se"]

            def image_interval(lv, est=est, se=se):
                z = float(norm.ppf(0.5 + lv / 2))
                return est - z * se, est + z * se

            test = DELONG
            closed_p = float(2 * norm.sf(abs(est) / se)) if se > 0 else (1.0 if est == 0 else 0.0)
        else:
            est = full[i]
            dd = dist[i][np.isfinite(dist[i])]

            def image_interval(lv, dd=dd):
                if not len(dd):
                    return math.nan, math.nan
                return tuple(np.quantile(dd, [(1 - lv) / 2, (1 + lv) / 2]))

            test = BOOTSTRAP
            closed_p = bootstrap_p(dd)
        img_lo, img_hi = (low[i], high[i]) if not use_delong else image_interval(level)
        lo, hi = combine(est, img_lo, img_hi, seed_se, seed_df, level)
        p = closed_p if not (seed_se > 0 and seed_df >= 1) else inverted_p(est, image_interval, seed_se, seed_df)
        ref_mean = full[cells.index((reference, group.primary))]
        scale = 100.0 / abs(ref_mean) if math.isfinite(ref_mean) and ref_mean != 0 else math.nan
        rows.append({"strategy": s, "reference": reference, "metric": group.primary,
                     "mean": full[cells.index((s, group.primary))], "reference_mean": ref_mean,
                     "diff": est, "ci_low": lo, "ci_high": hi, "p": p, "test": test,
                     "relative_pct": est * scale, "relative_ci_low_pct": lo * scale,
                     "relative_ci_high_pct": hi * scale, "seed_se": seed_se,
                     "paired_seeds": bool(same and len(seed_sets[s]) > 1), "resampled": d.kind,
                     "n_images": n, "n_units": n_units, "n_seeds": len(seed_sets[s])})
        if not same:
            notes.append(f"{name}/{s}: seeds differ from {reference}'s; the seed part of its comparison is unpaired")
    paired = pd.DataFrame(rows, columns=PAIRED_GROUP_COLUMNS)
    return GroupResult(intervals=intervals, paired=paired, notes=notes)


PAIRED_GROUP_COLUMNS = ["strategy", "reference", "metric", "mean", "reference_mean", "diff", "ci_low", "ci_high",
                        "p", "test", "relative_pct", "relative_ci_low_pct", "relative_ci_high_pct", "seed_se",
                        "paired_seeds", "resampled", "n_images", "n_units", "n_seeds"]


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
    settings: Settings
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


def analyse(runs, selected: pd.DataFrame, reference: str, settings: Settings | None = None,
            scratch: list[str] | tuple = ()) -> Significance | None:
    """Intervals and paired tests for every (dataset, arch) of a run; ``None`` when no job kept predictions.

    ``runs``: :func:`medtl.report.collect.collect_runs` (its ``file`` column locates each job's predictions);
    ``selected``: :func:`medtl.report.select.select_lr`; ``scratch``: the strategies trained from scratch, compared
    with the reference like the others but Holm-corrected as a family of their own (``holm_family``)."""
    settings = settings or Settings()
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
