"""Intervals, paired tests and their calibration (medtl.report.significance), the kept predictions
(medtl.training.predictions) and their place in the classification report.

The calibration tests simulate predictions with a known truth: a null (two strategies from the same
process) must be flagged in at most ~5 % of 200 comparisons (asserted <= 8 %), a known gain must be found
in most runs, and intervals must cover a known metric value about 95 % of the time. Each simulation has
fixed seeds, so the figures are reproducible; ``pytest -s`` prints them.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medtl import metrics as M
from medtl.report import significance as S
from medtl.report.classification import build_report
from medtl.training.predictions import FILE, predictions_path, read_predictions, write_predictions

FAST = S.Resampling(n_resamples=1000)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid_pair(s):
    p = 1 / (1 + np.exp(-s))
    return np.c_[1 - p, p]


# -- the weighted metrics are medtl.metrics ------------------------------------------------------------------
def random_task(task, rng, n=70, c=4):
    if task == "binary":
        c = 2
    if task == "multilabel":
        y = (rng.random((n, c)) < 0.3).astype(int)
        p = np.round(rng.random((n, c)), 1)          # rounded: many ties
    else:
        y = np.eye(c, dtype=int)[rng.integers(0, c, n)]
        p = np.round(rng.dirichlet(np.ones(c), n), 1)
    return y, p


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_weighted_metrics_equal_medtl_metrics_on_repeated_rows(task):
    rng = np.random.default_rng(0)
    y, p = random_task(task, rng)
    n = len(y)
    w = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1 / n), size=30)])
    w[1, :5] = 0  # images left out of a resample
    for m in M.METRICS:
        fast = S.weighted_metric(task, m, y, p, w)
        slow = S.resampled_metric(task, m, y, p, w)
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12, err_msg=f"{task} {m}")
        assert fast[0] == pytest.approx(M.compute(task, y, p, [m])[m], abs=1e-12)


def test_a_metric_defined_otherwise_falls_back_to_medtl_metrics(monkeypatch):
    rng = np.random.default_rng(1)
    y, p = random_task("multiclass", rng, n=60)
    assert S.check_consistency("multiclass", "accuracy", y, p, rng)
    real = M.compute

    def changed(task, y, p, names, sample_weight=None):  # as if medtl.metrics changed its definition of accuracy
        out = real(task, y, p, names, sample_weight=sample_weight)
        return {k: (v / 2 if k == "accuracy" else v) for k, v in out.items()}

    monkeypatch.setattr(M, "compute", changed)
    assert not S.check_consistency("multiclass", "accuracy", y, p, rng)
    group = S.Group(task="multiclass", y=y, groups=None, scores={"ft": {0: p}}, metrics=["accuracy"],
                    primary="accuracy")
    res = S.analyse_group(group, None, S.Resampling(n_resamples=100), rng)
    assert res.intervals["estimate"].iloc[0] == pytest.approx(changed("multiclass", y, p, ["accuracy"])["accuracy"])
    assert any("differs from medtl.metrics" in n for n in res.notes)


# -- resampling design ---------------------------------------------------------------------------------------
def test_design_resamples_patients_and_stratifies_by_class():
    y = np.eye(3, dtype=int)[[0, 0, 1, 1, 2, 2, 0, 1]]
    groups = ["a", "a", "b", "b", "c", "c", "", ""]          # two images without a patient: own units
    d = S.design(y, groups, "multiclass", min_stratum=1)
    assert d.kind == S.UNIT_PATIENT and d.clustered and d.n_units == 5
    assert d.unit_of_image[0] == d.unit_of_image[1] != d.unit_of_image[6]
    for stratum in d.strata:  # every unit of a stratum has the stratum's class
        classes = {int(y[d.unit_of_image == u].sum(axis=0).argmax()) for u in stratum}
        assert len(classes) == 1
    assert sorted(np.concatenate(d.strata).tolist()) == list(range(5))
    # strata under min_stratum units are pooled
    assert len(S.design(y, groups, "multiclass", min_stratum=5).strata) == 1
    # no group ids: images are the units
    assert S.design(y, None, "multiclass").kind == S.UNIT_IMAGE


def test_patients_are_resampled_whole():
    """Each image repeated 4 times under one patient id: resampling patients gives the interval of the
    unrepeated data, resampling images a much narrower one."""
    rng = np.random.default_rng(2)
    n = 150
    yb = rng.integers(0, 2, n)
    p = sigmoid_pair(1.0 * (2 * yb - 1) + rng.normal(size=n))
    ids = np.array([f"p{i:04d}" for i in range(n)])

    def interval(y, probs, groups):
        g = S.Group(task="binary", y=np.eye(2, dtype=int)[y], groups=groups, scores={"ft": {0: probs}},
                    metrics=["accuracy"], primary="accuracy")
        r = S.analyse_group(g, None, S.Resampling(n_resamples=1000), np.random.default_rng(9)).intervals.iloc[0]
        return r["ci_low"], r["ci_high"], r["resampled"]

    once = interval(yb, p, ids)
    rep = np.repeat(np.arange(n), 4)
    by_patient = interval(yb[rep], p[rep], ids[rep])
    by_image = interval(yb[rep], p[rep], None)
    assert by_patient[:2] == pytest.approx(once[:2], abs=1e-12)
    assert by_patient[2] == S.UNIT_PATIENT and by_image[2] == S.UNIT_IMAGE
    assert (by_image[1] - by_image[0]) < 0.7 * (by_patient[1] - by_patient[0])


# -- DeLong ----------------------------------------------------------------------------------------------------
def delong_by_definition(y, scores):
    """DeLong et al. (1988) straight from the definition: ψ over every (positive, negative) pair."""
    y = np.asarray(y).astype(bool)
    aucs, v10, v01 = [], [], []
    for s in scores:
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    return np.array(aucs), np.cov(np.array(v10)) / y.sum() + np.cov(np.array(v01)) / (~y).sum()


def test_delong_matches_its_definition_and_scikit_learn():
    rng = np.random.default_rng(3)
    n = 120
    y = rng.integers(0, 2, n)
    scores = np.vstack([np.round(y + rng.normal(size=n), 1), np.round(0.5 * y + rng.normal(size=n), 1),
                        rng.normal(size=n)])
    auc, cov = S.delong(y, scores)
    for k in range(3):
        assert auc[k] == pytest.approx(roc_auc_score(y, scores[k]), abs=1e-12)
    ref_auc, ref_cov = delong_by_definition(y, scores)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)


def test_delong_variance_agrees_with_a_large_paired_bootstrap():
    """The variance of a paired AUROC difference: DeLong against 2,000 bootstrap resamples scored by
    scikit-learn (an independent computation)."""
    rng = np.random.default_rng(4)
    n = 300
    y = (rng.random(n) < 0.4).astype(int)
    shared = rng.normal(size=n)
    a = 1.0 * y + shared + rng.normal(size=n)
    b = 1.3 * y + shared + rng.normal(size=n)
    r = S.delong_paired(y, [a], [b])
    assert r["diff"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    diffs = []
    for _ in range(2000):
        i = rng.integers(0, n, n)
        if 0 < y[i].sum() < n:
            diffs.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    boot_se = float(np.std(diffs, ddof=1))
    print(f"\nDeLong SE {r['se']:.5f}, bootstrap SE {boot_se:.5f} (2,000 resamples)")
    assert r["se"] == pytest.approx(boot_se, rel=0.10)


# -- calibration -------------------------------------------------------------------------------------------------
def multiclass_pair(rng, n=200, k=4, gain=0.0, base=1.2):
    """Two strategies' probabilities on the same images: a shared per-image difficulty and their own noise;
    ``gain`` strengthens the second one's signal."""
    y = np.eye(k, dtype=int)[rng.integers(0, k, n)]
    shared = rng.normal(size=(n, k))
    a = softmax(2 * base * y + shared + 0.8 * rng.normal(size=(n, k)))
    b = softmax(2 * (base + gain) * y + shared + 0.8 * rng.normal(size=(n, k)))
    return y, a, b


def binary_pair(rng, n=200, gain=0.0, mu=1.2):
    yb = (rng.random(n) < 0.4).astype(int)
    shared = rng.normal(size=n)
    a = sigmoid_pair(mu * yb + shared + 0.8 * rng.normal(size=n))
    b = sigmoid_pair((mu + gain) * yb + shared + 0.8 * rng.normal(size=n))
    return np.eye(2, dtype=int)[yb], a, b


def flagged(make, reps, seed, task, metric, settings=FAST, seeds=1):
    """Share of ``reps`` simulated comparisons with p < 0.05, and the tests used."""
    rng = np.random.default_rng(seed)
    hits, tests = 0, set()
    for _ in range(reps):
        y, a, b = make(rng)
        scores = {"ft": {s: a[s] for s in range(seeds)}, "x": {s: b[s] for s in range(seeds)}} if seeds > 1 \
            else {"ft": {0: a}, "x": {0: b}}
        g = S.Group(task=task, y=y, groups=None, scores=scores, metrics=[metric], primary=metric)
        row = S.analyse_group(g, "ft", settings, rng).paired.iloc[0]
        hits += row["p"] < 0.05
        tests.add(row["test"])
    return hits / reps, tests


def test_null_comparisons_paired_bootstrap_false_positive_rate():
    rate, tests = flagged(lambda r: multiclass_pair(r), 200, seed=10, task="multiclass", metric="accuracy")
    print(f"\npaired bootstrap, 200 null comparisons (accuracy, 200 images): {100 * rate:.1f}% flagged at 0.05")
    assert tests == {S.BOOTSTRAP}
    assert 0.01 <= rate <= 0.08


def test_null_comparisons_delong_false_positive_rate():
    rate, tests = flagged(lambda r: binary_pair(r), 200, seed=11, task="binary", metric="auroc",
                          settings=S.Resampling(n_resamples=100))  # DeLong's p needs no resampling
    print(f"\nDeLong, 200 null comparisons (AUROC, 200 images): {100 * rate:.1f}% flagged at 0.05")
    assert tests == {S.DELONG}
    assert 0.01 <= rate <= 0.08


def test_null_comparisons_with_training_randomness_across_seeds():
    """Three seeds whose models differ (the signal strength varies from seed to seed, as training randomness
    does): the seeds' part of the variance keeps the null in check."""
    def make(rng, n=200, k=4):
        y = np.eye(k, dtype=int)[rng.integers(0, k, n)]
        shared = rng.normal(size=(n, k))
        runs = [[softmax(2 * (1.2 + 0.5 * rng.normal()) * y + shared + 0.8 * rng.normal(size=(n, k)))
                 for _ in range(3)] for _ in range(2)]
        return y, runs[0], runs[1]

    rate, _ = flagged(make, 200, seed=12, task="multiclass", metric="accuracy", seeds=3)
    print(f"\npaired bootstrap + seeds, 200 null comparisons (3 seeds): {100 * rate:.1f}% flagged at 0.05")
    assert rate <= 0.08


def test_a_known_gain_is_found_in_most_runs():
    boot, _ = flagged(lambda r: multiclass_pair(r, gain=0.35), 100, seed=13, task="multiclass", metric="accuracy")
    dl, _ = flagged(lambda r: binary_pair(r, gain=0.6), 100, seed=14, task="binary", metric="auroc",
                    settings=S.Resampling(n_resamples=100))
    print(f"\npower: paired bootstrap {100 * boot:.0f}% (accuracy gain, 100 runs), DeLong {100 * dl:.0f}% "
          f"(AUROC gain, 100 runs)")
    assert boot >= 0.8
    assert dl >= 0.7


def test_interval_coverage_of_a_known_auroc():
    """Negatives N(0, 1), positives N(1, 1): the AUROC is Φ(1/√2) = 0.760."""
    rng = np.random.default_rng(15)
    true = norm.cdf(1 / math.sqrt(2))
    hits, reps = 0, 300
    for _ in range(reps):
        yb = (rng.random(200) < 0.4).astype(int)
        g = S.Group(task="binary", y=np.eye(2, dtype=int)[yb], groups=None,
                    scores={"ft": {0: sigmoid_pair(yb + rng.normal(size=200))}}, metrics=["auroc"], primary="auroc")
        r = S.analyse_group(g, None, FAST, rng).intervals.iloc[0]
        hits += r["ci_low"] <= true <= r["ci_high"]
    print(f"\ncoverage of the 95% interval, AUROC {true:.3f}, 200 images, {reps} samples: {100 * hits / reps:.1f}%")
    assert 0.91 <= hits / reps <= 0.98


def test_interval_coverage_with_patients_needs_the_patient_bootstrap():
    """100 patients x 4 images sharing a patient effect: the patient bootstrap covers the known accuracy about
    95 % of the time, resampling images as if independent does not."""
    def sample(rng, patients, per):
        yp = (rng.random(patients) < 0.5).astype(int)
        y = np.repeat(yp, per)
        u = np.repeat(1.5 * rng.normal(size=patients), per)
        s = (2 * y - 1) * (0.8 + u) + rng.normal(size=patients * per)
        return y, np.repeat([f"p{i}" for i in range(patients)], per), sigmoid_pair(s)

    y, _, p = sample(np.random.default_rng(0), 1_000_000, 1)
    true = float(((p[:, 1] >= 0.5) == y.astype(bool)).mean())
    cover = {}
    for by_patient in (True, False):
        rng = np.random.default_rng(16)
        hits = 0
        for _ in range(200):
            yb, groups, probs = sample(rng, 100, 4)
            g = S.Group(task="binary", y=np.eye(2, dtype=int)[yb], groups=groups if by_patient else None,
                        scores={"ft": {0: probs}}, metrics=["accuracy"], primary="accuracy")
            r = S.analyse_group(g, None, FAST, rng).intervals.iloc[0]
            hits += r["ci_low"] <= true <= r["ci_high"]
        cover[by_patient] = hits / 200
    print(f"\ncoverage with 100 patients x 4 images (accuracy {true:.3f}): by patient {100 * cover[True]:.1f}%, "
          f"by image {100 * cover[False]:.1f}%")
    assert 0.92 <= cover[True] <= 0.985
    assert cover[False] <= cover[True] - 0.08


def test_seed_variation_widens_the_interval_and_one_seed_is_the_bootstrap_alone():
    est, lo, hi = 0.8, 0.75, 0.86
    assert S.combine(est, lo, hi, 0.0, 0, 0.95) == (lo, hi)
    wide = S.combine(est, lo, hi, 0.02, 2, 0.95)
    h = 4.302652729911275 * 0.02  # t(2) quantile x SE
    assert wide == pytest.approx((est - math.hypot(0.05, h), est + math.hypot(0.06, h)))
    assert S.seed_component([0.7, 0.8, 0.9]) == pytest.approx((0.1 / math.sqrt(3), 2))
    assert S.seed_component([0.7, 0.8], [0.6, 0.75]) == pytest.approx((0.025, 1))  # sd of (0.1, 0.05) / √2
    # the inverted p-value: the interval at level 1 - p just touches 0
    dist = np.random.default_rng(0).normal(0.02, 0.01, 5000)
    quant = lambda lv: tuple(np.quantile(dist, [(1 - lv) / 2, (1 + lv) / 2]))  # noqa: E731
    p = S.inverted_p(0.02, quant, 0.005, 2)
    assert S.combine(0.02, *quant(1 - p), 0.005, 2, 1 - p)[0] == pytest.approx(0.0, abs=1e-6)
    assert S.bootstrap_p(dist) == pytest.approx(2 * (1 + np.sum(dist <= 0)) / 5001)


def test_holm_adjusts_within_the_family_and_keeps_nan():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, math.nan]
    out = S.holm(p)
    np.testing.assert_allclose(out[:3], multipletests(p[:3], method="holm")[1])
    assert math.isnan(out[3])
    assert out[1] > 0.05  # 0.04 alone would be significant; among three it is not


# -- predictions.parquet -------------------------------------------------------------------------------------------
def test_predictions_file_round_trip(make_store, tmp_path):
    store = make_store(task="multilabel", n=40, n_classes=3)
    probs = {s: np.random.default_rng(0).random((len(store.indices(s)), 3)).astype(np.float32) for s in ("val", "test")}
    path = tmp_path / "run" / FILE
    write_predictions(path, store, probs)
    assert not list(path.parent.glob("*.tmp"))
    pred = read_predictions(path)
    assert pred.task == "multilabel" and pred.classes == store.classes
    test = pred.split("test")
    assert test["index"].tolist() == store.indices("test").tolist()
    np.testing.assert_array_equal(pred.targets(test), store.targets("test"))
    np.testing.assert_array_equal(pred.scores(test), probs["test"])  # float32 kept as predicted
    labels = store.labels[store.labels["split"] == "test"]
    assert test["image_id"].tolist() == labels["image_id"].tolist()
    assert test["group"].tolist() == labels["group"].tolist()
    with pytest.raises(ValueError, match="probabilities"):
        write_predictions(path, store, {"test": probs["val"][:2]})


def job_hp(seed=0):
    return {"dataset": {"name": "tiny", "metrics": None, "primary_metric": None},
            "arch": {"name": "vgg_tiny", "weights": {"type": "none"}, "preprocess": {"resize": 32, "crop": 32}},
            "strategy": {"name": "ft", "type": "ft", "settings": {}},
            "training": {"epochs": 1, "batch_size": 16, "patience": 1, "device": "cpu", "optimizer": "adam",
                         "eval_batch_size": 64},
            "lr": 1e-3, "seed": seed}


def test_a_training_job_keeps_its_predictions_before_its_metrics(make_store, tmp_path, monkeypatch):
    from medtl.training import job

    store = make_store(task="multiclass", n=50)
    out = tmp_path / "run"
    result = job.run(job_hp(), str(store.root), None, str(out), str(tmp_path / "ck.pt"))
    pred = read_predictions(out / FILE)
    for split in ("val", "test"):
        rows = pred.split(split)
        assert len(rows) == len(store.indices(split))
        recomputed = M.compute(pred.task, pred.targets(rows), pred.scores(rows), list(result[split]))
        assert recomputed == pytest.approx(result[split], abs=1e-9)
    assert predictions_path(out / "metrics.json") == out / FILE

    # written before metrics.json: a job that cannot write its predictions leaves no finished-looking run
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(job, "write_predictions", fail)
    with pytest.raises(OSError):
        job.run(job_hp(), str(store.root), None, str(tmp_path / "failed"), str(tmp_path / "ck2.pt"))
    assert not (tmp_path / "failed" / "metrics.json").exists()


# -- the classification report ----------------------------------------------------------------------------------------
SEEDS = [0, 1, 2]
LRS = [0.001, 0.01]
ARCHS = ["arch_a", "arch_b"]
STRATEGIES = ["ft", "better", "same"]
GAIN = {"ft": 0.0, "better": 0.5, "same": 0.0}


def fabricate_dataset(rng, task, n):
    """Targets, groups and a generator of one job's probabilities (signal grows with the gain)."""
    if task == "binary":
        y = np.eye(2, dtype=int)[(rng.random(n) < 0.4).astype(int)]
        groups = [""] * n                                   # independent images: DeLong
    else:
        patients = np.repeat(np.arange(n // 2), 2)          # two images per patient
        y = np.eye(3, dtype=int)[np.repeat(rng.integers(0, 3, n // 2), 2)]
        groups = [f"p{i:03d}" for i in patients]
    shared = rng.normal(size=y.shape)

    def probs(arch, strategy, lr, seed):
        r = np.random.default_rng([seed, int(lr * 1000), STRATEGIES.index(strategy), ARCHS.index(arch)])
        strength = 0.3 + GAIN[strategy] + (0.1 if lr == 0.001 else 0.0)
        return softmax(2 * strength * y + shared + 0.3 * r.normal(size=y.shape)).astype(np.float32)

    return y, groups, probs


def write_run(root, ds, task, primary, metrics, y, groups, probs, arch, strategy, lr, seed):
    d = root / "runs" / ds / arch / strategy / f"lr{lr:g}" / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    n = len(y)
    p = probs(arch, strategy, lr, seed)
    frame = pd.DataFrame({"split": "test", "index": np.arange(n), "image_id": [f"i{i}" for i in range(n)],
                          "group": groups})
    classes = [f"c{k}" for k in range(y.shape[1])]
    for k, c in enumerate(classes):
        frame[f"target.{c}"] = y[:, k].astype(np.uint8)
    for k, c in enumerate(classes):
        frame[f"score.{c}"] = p[:, k]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({b"medtl": json.dumps({"task": task, "classes": classes}).encode()})
    pq.write_table(table, d / FILE)
    test = M.compute(task, y, p, metrics)
    val = {m: v + 0.01 * (lr == 0.001) for m, v in test.items()}  # lr 0.001 wins on validation
    (d / "metrics.json").write_text(json.dumps({
        "dataset": ds, "arch": arch, "strategy": strategy, "lr": lr, "seed": seed, "primary_metric": primary,
        "monitor": primary, "best_epoch": 1, "epochs_run": 2, "device": "cpu", "seconds": 1.0,
        "val": val, "test": test}))
    return str(d / "metrics.json")


DATASETS = {"ds_bin": ("binary", "auroc", ["auroc", "accuracy"], 160),
            "ds_multi": ("multiclass", "accuracy", ["accuracy", "macro_f1"], 120)}


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    root = tmp_path_factory.mktemp("sig_report")
    rng = np.random.default_rng(20)
    files = []
    for ds, (task, primary, metrics, n) in DATASETS.items():
        y, groups, probs = fabricate_dataset(rng, task, n)
        for arch in ARCHS:
            for strategy in STRATEGIES:
                for lr in LRS:
                    for seed in SEEDS:
                        files.append(write_run(root, ds, task, primary, metrics, y, groups, probs, arch, strategy,
                                               lr, seed))
    return root, files


@pytest.fixture(scope="module")
def report(fabricated):
    root, files = fabricated
    out = root / "out"
    written = build_report(files, str(out), reference="ft", strategy_order=STRATEGIES, arch_order=ARCHS,
                           stats={"bootstrap_resamples": 500, "confidence_level": 0.95, "bootstrap_seed": 0})
    return out, written


def test_report_writes_intervals_paired_tests_and_forest_plots(report):
    out, written = report
    for name in ("intervals.csv", "paired_comparison.csv", "paired_comparison.md",
                 *(f"figures/forest_{ds}.png" for ds in DATASETS)):
        assert name in written and (out / name).stat().st_size > 0, name
    assert (out / "figures" / "forest_ds_bin.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "## Confidence intervals and paired tests" in md and "figures/forest_ds_multi.png" in md


def test_every_reported_cell_has_an_interval_around_its_mean(report):
    out, _ = report
    iv = pd.read_csv(out / "intervals.csv")
    assert len(iv) == sum(len(m) for *_, m, _ in DATASETS.values()) * len(ARCHS) * len(STRATEGIES)
    assert (iv["lr"] == 0.001).all()                        # the selected learning rate's predictions
    np.testing.assert_allclose(iv["estimate"], iv["mean"], atol=1e-9)  # predictions reproduce metrics.json
    assert (iv["ci_low"] <= iv["mean"]).all() and (iv["mean"] <= iv["ci_high"]).all()
    assert set(iv.loc[iv["dataset"] == "ds_multi", "resampled"]) == {S.UNIT_PATIENT}
    assert set(iv.loc[iv["dataset"] == "ds_bin", "resampled"]) == {S.UNIT_IMAGE}
    assert (iv["n_seeds"] == 3).all()
    # beside mean ± SE in the per-dataset CSV
    table = pd.read_csv(out / "tables" / "ds_multi.csv").set_index("strategy")
    cols = list(table.columns)
    assert cols.index("arch_a_accuracy_ci_low") == cols.index("arch_a_accuracy_se") + 1
    row = iv[(iv["dataset"] == "ds_multi") & (iv["arch"] == "arch_a") & (iv["strategy"] == "better")
             & (iv["metric"] == "accuracy")].iloc[0]
    assert table.loc["better", "arch_a_accuracy_ci_low"] == pytest.approx(row["ci_low"])
    assert table.loc["better", "arch_a_accuracy_ci_high"] == pytest.approx(row["ci_high"])
    assert table.loc["better", "arch_a_accuracy"] == f"{row['mean']:.3f} ± {table.loc['better', 'arch_a_accuracy_se']:.3f}"
    # the seeds' part is the table's standard error, its t(2) half-width added in quadrature to the bootstrap's
    assert row["seed_se"] == pytest.approx(table.loc["better", "arch_a_accuracy_se"], rel=1e-9)
    h = 4.302652729911275 * row["seed_se"]
    assert row["ci_low"] == pytest.approx(row["estimate"] - math.hypot(row["estimate"] - row["image_ci_low"], h))
    assert row["ci_high"] == pytest.approx(row["estimate"] + math.hypot(row["image_ci_high"] - row["estimate"], h))


def test_paired_comparisons_with_holm(report):
    from statsmodels.stats.multitest import multipletests

    out, _ = report
    pr = pd.read_csv(out / "paired_comparison.csv")
    assert len(pr) == len(DATASETS) * len(ARCHS) * (len(STRATEGIES) - 1)
    assert set(pr.loc[pr["dataset"] == "ds_bin", "test"]) == {S.DELONG}
    assert set(pr.loc[pr["dataset"] == "ds_multi", "test"]) == {S.BOOTSTRAP}
    np.testing.assert_allclose(pr["diff"], pr["mean"] - pr["reference_mean"], atol=1e-9)
    for _, fam in pr.groupby(["dataset", "arch"]):
        np.testing.assert_allclose(fam["p_holm"], multipletests(fam["p"], method="holm")[1])
    assert (pr["significant"] == (pr["p_holm"] < 0.05)).all()
    better = pr[pr["strategy"] == "better"]
    assert better["better"].all() and (better["ci_low"] > 0).all()          # the built-in gain is found
    assert not pr.loc[pr["strategy"] == "same", "better"].any()             # and no gain where there is none
    np.testing.assert_allclose(pr["relative_pct"], 100 * pr["diff"] / pr["reference_mean"].abs())


def test_effectiveness_and_best_method_tables_count_significance(report):
    out, _ = report
    pr = pd.read_csv(out / "paired_comparison.csv")
    eff = pd.read_csv(out / "effectiveness.csv").set_index("strategy")
    cols = list(eff.columns)
    assert cols.index("n_better_significant") == cols.index("n_better") + 1
    for s in ("better", "same"):
        assert eff.loc[s, "n_better_significant"] == int(pr.loc[pr["strategy"] == s, "better"].sum())
    assert eff.loc["better", "n_better_significant"] == 4
    assert "Significant" in (out / "effectiveness.md").read_text()
    best = pd.read_csv(out / "best_method.csv")
    assert (best["best_strategy"] == "better").all() and best["gain_significant"].all()


def test_table11_and_table12_carry_the_significance(report):
    out, _ = report
    t11 = pd.read_csv(out / "table11.csv")
    assert "gain_significant" in t11 and t11["gain_significant"].all()
    t12 = pd.read_csv(out / "table12.csv").set_index("strategy")
    assert t12.loc["better", "total_significant"] == 4 and t12.loc["same", "total_significant"] == 0


def test_a_best_method_whose_gain_is_noise_is_flagged():
    paired = pd.DataFrame([{"dataset": "d", "arch": "a", "strategy": "x", "relative_ci_low_pct": -1.0,
                            "relative_ci_high_pct": 3.0, "p_holm": 0.4, "better": False, "test": S.BOOTSTRAP}])
    best = pd.DataFrame([{"dataset": "d", "arch": "a", "strategy": "x", "gain_pct": 1.0},
                         {"dataset": "e", "arch": "a", "strategy": "ft", "gain_pct": 0.0}])
    flagged = S.flag_best(best, paired, "strategy")
    assert pd.notna(flagged["gain_significant"].iloc[0]) and not flagged["gain_significant"].iloc[0]
    assert pd.isna(flagged["gain_significant"].iloc[1])     # the reference won: nothing to test


def test_report_without_predictions_says_so(fabricated, tmp_path):
    root, files = fabricated
    copies = []
    for f in files[:len(files) // 2]:  # ds_bin only, metrics.json without predictions.parquet
        dst = tmp_path / "runs" / f.split("/runs/")[1]
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(open(f).read())
        copies.append(str(dst))
    written = build_report(copies, str(tmp_path / "out"), reference="ft")
    assert "intervals.csv" not in written and "paired_comparison.csv" not in written
    assert "no job kept its predictions" in (tmp_path / "out" / "report.md").read_text()
    # predictions for some strategies only: the others get no interval, with a note
    for f in copies:
        if "/better/" in f:
            src = [g for g in files if g.endswith(f.split("/runs/")[1])][0]
            predictions_path(f).write_bytes(predictions_path(src).read_bytes())
            continue
    written = build_report(copies, str(tmp_path / "out2"), reference="ft")
    iv = pd.read_csv(tmp_path / "out2" / "intervals.csv")
    assert set(iv["strategy"]) == {"better"}
    assert "no predictions.parquet for ft, same" in (tmp_path / "out2" / "report.md").read_text()
    assert pd.read_csv(tmp_path / "out2" / "paired_comparison.csv").empty


# -- the published side by side ----------------------------------------------------------------------------------------
def test_published_number_inside_or_outside_our_interval(tmp_path):
    """A run built so that every seed scores accuracy 0.80 on 200 test images: the published 80.0 lies inside
    our interval, a published 95.0 macro F1 (ours is about 0.80) outside; an unpublished setting has no verdict."""
    from medtl.report.published import build_published_report, parse_reference

    n, files = 200, []
    y = np.eye(2, dtype=int)[np.arange(n) % 2]
    correct = np.arange(n) < 160
    for strategy in ("ft", "lp"):
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            margin = rng.uniform(0.55, 0.95, n)
            p1 = np.where(correct == (y[:, 1] == 1), margin, 1 - margin)
            p = np.c_[1 - p1, p1].astype(np.float32)
            files.append(write_run(tmp_path, "pub_ds", "binary", "accuracy", ["accuracy", "macro_f1"], y,
                                   [""] * n, lambda *_: p, "resnet50", strategy, 0.001, seed))
    build_report(files, str(tmp_path / "report"), reference="ft", stats={"bootstrap_resamples": 500})
    reference = parse_reference({"studies": {"paper": {
        "citation": "A study", "source": "doi:test", "obtained": True,
        "tables": [{"source": "Table 3", "dataset": "pub_ds", "arch": "resnet50", "strategy": "ft", "scale": 100,
                    "rows": [{"metric": "accuracy", "value": 80.0}, {"metric": "macro_f1", "value": 95.0}]}]}}})
    build_published_report(files, reference, tmp_path / "published", intervals=tmp_path / "report" / "intervals.csv")
    side = pd.read_csv(tmp_path / "published" / "side_by_side.csv").set_index(["strategy", "metric"])
    acc = side.loc[("ft", "accuracy")]
    assert acc["mean"] == pytest.approx(0.80) and acc["ci_low"] < 0.80 < acc["ci_high"]
    assert acc["published_in_ci"] == True  # noqa: E712  (read back from CSV)
    f1 = side.loc[("ft", "macro_f1")]
    assert f1["ci_high"] < 0.95 and f1["published_in_ci"] == False  # noqa: E712
    assert pd.isna(side.loc[("lp", "accuracy"), "published_in_ci"])     # no published counterpart
    md = (tmp_path / "published" / "side_by_side.md").read_text()
    assert "In our interval" in md and "| yes" in md and "| no" in md
