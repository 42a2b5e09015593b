"""The report's statistics as pure functions (medtl.report.statistics, medtl.report.weighted_metrics) and the
weighted metrics of medtl.metrics (``sample_weight``) that define them: small inputs whose answers are known
or computed another way (repeated rows, the definition, a hand-written Holm)."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtl import metrics as M
from medtl.report import statistics as ST
from medtl.report import weighted_metrics as WM

TASKS = ["binary", "multiclass", "multilabel"]


def random_task(task, rng, n=60, c=4):
    if task == "binary":
        c = 2
    if task == "multilabel":
        y = (rng.random((n, c)) < 0.3).astype(int)
        p = np.round(rng.random((n, c)), 1)          # rounded: ties
    else:
        y = np.eye(c, dtype=int)[rng.integers(0, c, n)]
        p = np.round(rng.dirichlet(np.ones(c), n), 1)
    return y, p


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- medtl.metrics with sample_weight -------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_integer_weights_are_repeated_rows(task):
    rng = np.random.default_rng(0)
    y, p = random_task(task, rng)
    w = rng.integers(0, 4, len(y))
    idx = np.repeat(np.arange(len(y)), w)
    weighted = M.compute(task, y, p, list(M.METRICS), sample_weight=w)
    repeated = M.compute(task, y[idx], p[idx], list(M.METRICS))
    for m in M.METRICS:
        assert weighted[m] == pytest.approx(repeated[m], abs=1e-12, nan_ok=True), m


@pytest.mark.parametrize("task", TASKS)
def test_unit_weights_change_nothing(task):
    y, p = random_task(task, np.random.default_rng(1))
    plain = M.compute(task, y, p, list(M.METRICS))
    assert M.compute(task, y, p, list(M.METRICS), sample_weight=None) == plain
    ones = M.compute(task, y, p, list(M.METRICS), sample_weight=np.ones(len(y)))
    for m in M.METRICS:
        assert ones[m] == pytest.approx(plain[m], abs=1e-12), m


def test_a_class_whose_positives_weigh_zero_is_left_out():
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]])
    p = softmax(np.random.default_rng(2).normal(size=y.shape))
    w = np.array([0, 1, 2, 1, 1, 0])                 # class 0 is not in this sample
    ev = M.evaluate("multiclass", y, p, ["auroc", "balanced_accuracy"], sample_weight=w)
    assert "class 0" in ev.excluded and ev.n_images == 4
    keep = w > 0
    assert ev.scores == pytest.approx(M.compute("multiclass", y[keep], p[keep], ["auroc", "balanced_accuracy"],
                                                sample_weight=w[keep]))


@pytest.mark.parametrize("w, message", [([1.0, 2.0], "shape"), ([1.0, -1.0, 1.0, 1.0], "non-negative"),
                                        ([1.0, math.nan, 1.0, 1.0], "finite")])
def test_bad_weights_are_refused(w, message):
    y, p = random_task("binary", np.random.default_rng(3), n=4)
    with pytest.raises(ValueError, match=message):
        M.compute("binary", y, p, ["accuracy"], sample_weight=np.array(w))


# -- the vectorised weighted metrics are medtl.metrics --------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_vectorised_metrics_equal_medtl_metrics_with_weights(task):
    rng = np.random.default_rng(4)
    y, p = random_task(task, rng)
    n = len(y)
    w = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1 / n), size=8), rng.random((2, n))])  # + fractional
    w[1, :10] = 0
    for m in M.METRICS:
        fast = WM.weighted_metric(task, m, y, p, w)
        slow = WM.resampled_metric(task, m, y, p, w)
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12, err_msg=f"{task} {m}")
        assert WM.check_consistency(task, m, y, p, np.random.default_rng(0))


def test_unknown_metric_is_refused():
    y, p = random_task("multiclass", np.random.default_rng(5))
    with pytest.raises(ValueError, match="unknown metric"):
        WM.weighted_metric("multiclass", "dice", y, p, np.ones((1, len(y))))


# -- resampling design ----------------------------------------------------------------------------------------
def test_design_units_and_strata():
    y = np.eye(2, dtype=int)[[0] * 12 + [1] * 6 + [1, 0]]
    groups = [f"p{i // 2}" for i in range(18)] + ["", ""]   # 9 patients of two images, two images alone
    d = ST.design(y, groups, "binary", min_stratum=3)
    assert d.kind == ST.UNIT_PATIENT and d.clustered and d.n_units == 11
    sizes = sorted(len(s) for s in d.strata)
    assert sizes == [4, 7]                                  # class 1: 3 patients + 1 image; class 0: 6 + 1
    assert sorted(np.concatenate(d.strata).tolist()) == list(range(11))
    for min_stratum in (5, 8):  # 5: 4 units alone go into the largest stratum; 8: both too small, pooled
        strata = ST.design(y, groups, "binary", min_stratum=min_stratum).strata
        assert len(strata) == 1 and sorted(strata[0].tolist()) == list(range(11))
    d = ST.design(y, None, "binary")
    assert d.kind == ST.UNIT_IMAGE and not d.clustered and d.n_units == 20


def test_multilabel_units_are_stratified_by_their_rarest_class():
    y = np.array([[1, 1], [1, 0], [1, 0], [0, 0], [0, 0], [1, 1]])
    d = ST.design(y, None, "multilabel", min_stratum=1)
    strata = sorted(sorted(s.tolist()) for s in d.strata)
    assert strata == [[0, 5], [1, 2], [3, 4]]             # rarer class 1 / class 0 only / no finding


# -- DeLong ---------------------------------------------------------------------------------------------------
def test_delong_equals_its_definition():
    rng = np.random.default_rng(6)
    y = np.r_[np.ones(7, int), np.zeros(9, int)]
    scores = np.vstack([np.round(y + rng.normal(size=16), 1), rng.normal(size=16)])
    auc, cov = ST.delong(y, scores)
    yb = y.astype(bool)
    v10, v01 = [], []
    for k, s in enumerate(scores):
        psi = (s[yb][:, None] > s[~yb][None, :]) + 0.5 * (s[yb][:, None] == s[~yb][None, :])
        assert auc[k] == pytest.approx(psi.mean(), abs=1e-12)
        assert auc[k] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    np.testing.assert_allclose(cov, np.cov(v10) / 7 + np.cov(v01) / 9, atol=1e-12)
    r = ST.delong_paired(y, [scores[0]], [scores[1]])
    assert r["diff"] == pytest.approx(auc[0] - auc[1], abs=1e-12)
    assert r["se"] == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), abs=1e-12)
    with pytest.raises(ValueError, match="two positives"):
        ST.delong(np.r_[1, 0, 0, 0], np.zeros((1, 4)))


# -- seeds, intervals, p-values, Holm ------------------------------------------------------------------------
def test_seed_component():
    assert ST.seed_component([0.7, 0.8, 0.9]) == pytest.approx((0.1 / math.sqrt(3), 2))
    assert ST.seed_component([0.7, 0.8], [0.6, 0.75]) == pytest.approx((0.025, 1))  # sd(0.1, 0.05) / √2
    se, df = ST.seed_component([0.7, 0.8, 0.9], [0.6, 0.8], paired=False)
    assert (se, df) == pytest.approx((math.sqrt(0.01 / 3 + 0.02 / 2), 1))
    assert ST.seed_component([0.5]) == (0.0, 0)


def test_combine_widens_in_quadrature():
    assert ST.combine(0.8, 0.75, 0.86, 0.0, 0, 0.95) == (0.75, 0.86)
    h = 12.706204736174698 * 0.01  # t(1) 97.5 % quantile x SE
    assert ST.combine(0.8, 0.75, 0.86, 0.01, 1, 0.95) == pytest.approx(
        (0.8 - math.hypot(0.05, h), 0.8 + math.hypot(0.06, h)))


def test_bootstrap_p_and_inverted_p():
    d = np.array([-0.1, 0.2, 0.3, 0.1, 0.4, 0.0, 0.2, 0.5, math.nan])
    assert ST.bootstrap_p(d) == pytest.approx(2 * (1 + 2) / 9)   # 2 of the 8 finite values are <= 0
    assert ST.bootstrap_p(np.zeros(5)) == 1.0
    assert math.isnan(ST.bootstrap_p([math.nan]))
    normal = lambda lv: (0.03 - 1.959963984540054 * 0.01, 0.03 + 1.959963984540054 * 0.01)  # noqa: E731
    assert ST.inverted_p(0.0, lambda lv: (-0.01, 0.01), 0.0, 0) == 1.0
    assert math.isnan(ST.inverted_p(math.nan, normal, 0.0, 0))
    p = ST.inverted_p(0.03, lambda lv: (0.02, 0.04), 0.01, 3)      # the interval at 1 - p touches 0
    assert ST.combine(0.03, 0.02, 0.04, 0.01, 3, 1 - p)[0] == pytest.approx(0.0, abs=1e-6)


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, math.nan, 0.005]
    out = ST.holm(p)
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then running maximum
    np.testing.assert_allclose(out[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])
    assert math.isnan(out[3])
    assert np.isnan(ST.holm([math.nan])).all()


# -- one group ------------------------------------------------------------------------------------------------
def group(task="multiclass", n=90, k=3, seeds=(0, 1), same=False):
    rng = np.random.default_rng(7)
    y = np.eye(k, dtype=int)[rng.integers(0, k, n)]
    ft = {s: softmax(1.5 * y + rng.normal(size=(n, k))) for s in seeds}
    other = {s: ft[s].copy() for s in seeds} if same else {s: softmax(2.5 * y + rng.normal(size=(n, k)))
                                                             for s in seeds}
    return ST.Group(task=task, y=y, groups=None, scores={"ft": ft, "x": other}, metrics=["accuracy", "auroc"],
                    primary="accuracy")


def test_analyse_group_estimates_are_seed_means_of_medtl_metrics():
    g = group()
    res = ST.analyse_group(g, "ft", ST.Resampling(n_resamples=200), np.random.default_rng(0))
    for r in res.intervals.to_dict("records"):
        m, seeds = r["metric"], g.scores[r["strategy"]].values()
        want = np.mean([M.compute(g.task, g.y, p, [m])[m] for p in seeds])
        assert r["estimate"] == pytest.approx(want, abs=1e-12)
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"]
        assert r["ci_low"] <= r["image_ci_low"] and r["image_ci_high"] <= r["ci_high"]   # widened by the seeds
    row = res.paired.iloc[0]
    assert row["strategy"] == "x" and row["test"] == ST.BOOTSTRAP and row["paired_seeds"]
    assert row["diff"] == pytest.approx(row["mean"] - row["reference_mean"], abs=1e-12)
    assert row["diff"] > 0 and row["p"] < 0.05                # a much stronger signal
    again = ST.analyse_group(g, "ft", ST.Resampling(n_resamples=200), np.random.default_rng(0))
    assert again.intervals.equals(res.intervals) and again.paired.equals(res.paired)


def test_a_strategy_equal_to_the_reference_is_no_different():
    res = ST.analyse_group(group(same=True, seeds=(0,)), "ft", ST.Resampling(n_resamples=200), np.random.default_rng(1))
    row = res.paired.iloc[0]
    assert row["diff"] == 0 and row["ci_low"] == 0 and row["ci_high"] == 0 and row["p"] == 1.0


def test_binary_auroc_on_independent_images_uses_delong():
    rng = np.random.default_rng(8)
    yb = (rng.random(120) < 0.4).astype(int)
    pair = lambda s: np.c_[1 - s, s]  # noqa: E731
    g = ST.Group(task="binary", y=np.eye(2, dtype=int)[yb], groups=None, metrics=["auroc"], primary="auroc",
                 scores={"ft": {0: pair(1 / (1 + np.exp(-(yb + rng.normal(size=120)))))},
                         "x": {0: pair(1 / (1 + np.exp(-(2 * yb + rng.normal(size=120)))))}})
    row = ST.analyse_group(g, "ft", ST.Resampling(n_resamples=100), rng).paired.iloc[0]
    r = ST.delong_paired(yb, [g.scores["x"][0][:, 1]], [g.scores["ft"][0][:, 1]])
    assert row["test"] == ST.DELONG and row["diff"] == pytest.approx(r["diff"], abs=1e-12)
    assert row["p"] == pytest.approx(2 * (1 - __import__("scipy").stats.norm.cdf(abs(r["diff"]) / r["se"])))


# -- purity ----------------------------------------------------------------------------------------------------
def test_the_statistics_read_and_write_no_file_and_no_table_text():
    for module in (ST, WM):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"pathlib", "os", "io", "shutil", "matplotlib", "medtl.io", "medtl.training.predictions",
                               "tables", "document"}, (module.__name__, imported)
        calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                 for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not calls & {"open", "to_markdown", "to_csv", "read_csv", "savefig", "write_text", "read_text"}
