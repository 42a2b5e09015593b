"""The statistics of the classification report, as pure functions (no file, no table text): confidence
intervals for every reported cell and paired comparisons with the reference strategy, from the per-image
predictions of one (dataset, architecture). :mod:`medtl.report.significance` loads the predictions and
writes the tables and figures.

Method (the same text is in report.md and docs/statistics.md):

- **Resampling units.** Test images are resampled by patient when the dataset has patient (group)
  ids, otherwise image by image. Units are stratified by class (single-label: the unit's most frequent
  class; multi-label: the rarest class it is positive for, or "no finding"), so every resample keeps the
  class counts; strata with fewer than ``min_stratum`` units are pooled.
- **Test images.** :func:`scipy.stats.bootstrap` (percentile method) with one sample per stratum, which
  scipy resamples independently: a stratified (cluster) bootstrap. One draw serves every strategy and seed
  of a (dataset, architecture), so comparisons are paired on the same images. A cell is the mean over
  seeds of the metric of :mod:`medtl.metrics`, computed with the resample's multiplicities as weights
  (:func:`medtl.report.weighted_metrics.weighted_metric`, vectorised over the resamples;
  ``check_consistency`` holds it to ``medtl.metrics.compute(..., sample_weight=...)`` on the data at hand,
  and the report falls back to ``compute`` itself on every resample where they differ).
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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .declaration import REPORT
from .weighted_metrics import check_consistency, resampled_metric, weighted_metric

UNIT_PATIENT, UNIT_IMAGE = "patients", "images"
BOOTSTRAP, DELONG = "paired bootstrap", "DeLong"


@dataclass
class Resampling:
    """How intervals and paired tests resample: the ``report`` section's settings (their defaults declared
    in :mod:`medtl.report.declaration`) and two limits of the implementation."""
    n_resamples: int = REPORT["bootstrap_resamples"]
    confidence_level: float = REPORT["confidence_level"]
    seed: int = REPORT["bootstrap_seed"]
    min_stratum: int = 5         # strata with fewer units are pooled
    max_batch_elements: int = 4_000_000  # resamples x images held at once

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence_level

    @classmethod
    def from_config(cls, report: dict | None) -> "Resampling":
        report = {**REPORT, **(report or {})}  # the declared defaults under what the section sets
        return cls(n_resamples=int(report["bootstrap_resamples"]), confidence_level=float(report["confidence_level"]),
                   seed=int(report["bootstrap_seed"]))


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


def analyse_group(group: Group, reference: str | None, settings: Resampling, rng: np.random.Generator,
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

