"""Bad input never becomes a number (issue 22): a class missing from a split, a metric undefined on it, a
deleted metrics.json, a figure cell with nothing to show.

- medtl.metrics: a class without positives is left out of the macro means *and named with the reason*; a
  metric undefined as a whole is NaN in memory, null in metrics.json, with its reason; never bare NaN in JSON.
- training: an undefined validation metric that selects (the monitor, the primary metric) fails the job with
  a message naming the split, the class and what to do; one defined over fewer classes selects, and the log
  says which classes it leaves out.
- report: the classes left out are named under the dataset table and in the notes (log and report.md); a
  group with no defined validation score at any lr gets no lr; the relative-improvement heatmap, bars and
  table leave out rows and columns with nothing to show and name them; a metrics.json missing beside its
  predictions.parquet is named as an interrupted job.
- workflow: a deleted metrics.json is rerun by ``snakemake`` (and listed by ``snakemake -n``).
"""
from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from medtl import metrics as M
from medtl.data.store import write_store
from medtl.io import write_json


def strict_load(text: str):
    """json.loads as a strict reader: NaN, Infinity and -Infinity are refused."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


# -- medtl.metrics ---------------------------------------------------------------------------------------------
@pytest.fixture
def multilabel_without_c2():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.4).astype(int)
    y[:2, :2] = [[1, 0], [0, 1]]
    y[:, 2] = 0  # no positive image of c2 in this split
    p = np.clip(0.5 * y + 0.5 * rng.random((40, 3)), 0, 1)
    return y, p


def test_class_without_positives_is_left_out_of_the_macro_means_and_named(multilabel_without_c2):
    y, p = multilabel_without_c2
    ev = M.evaluate("multilabel", y, p, ["auroc", "map", "kappa", "macro_f1"], ["c0", "c1", "c2"], "test")
    per = M.per_class_auroc(y, p)
    assert ev.scores["auroc"] == pytest.approx((per[0] + per[1]) / 2)      # over the classes where it is defined
    assert M.compute("multilabel", y, p, ["auroc"])["auroc"] == ev.scores["auroc"]
    assert ev.json_per_class()["c2"] == {"auroc": None, "ap": None, "support": 0}
    [entry] = ev.json_excluded()
    assert entry["class"] == "c2" and entry["support"] == 0
    assert entry["metrics"][:3] == ["auroc", "map", "kappa"]
    assert "no positive image of 'c2' among the 40 test images" in entry["reason"]
    assert "CheXpert" in entry["reason"]
    assert any("class 'c2' left out of the macro AUROC, mAP, kappa" in line for line in ev.messages())
    assert ev.undefined == {}


def test_metric_undefined_as_a_whole_is_null_with_its_reason():
    y = np.eye(2, dtype=int)[[0, 0, 0, 0]]              # a binary split without a positive image
    p = np.c_[np.full(4, 0.7), np.full(4, 0.3)]
    ev = M.evaluate("binary", y, p, ["auroc", "kappa", "accuracy"], ["normal", "pneumonia"], "val")
    assert math.isnan(ev.scores["auroc"]) and math.isnan(ev.scores["kappa"])
    assert ev.json_scores() == {"auroc": None, "kappa": None, "accuracy": 1.0}
    assert "no positive image of 'pneumonia' among the 4 val images" in ev.undefined["auroc"]
    assert "every prediction is 'normal'" in ev.undefined["kappa"]
    empty = M.evaluate("multiclass", np.zeros((0, 3), int), np.zeros((0, 3)), ["accuracy"], None, "test")
    assert empty.json_scores() == {"accuracy": None} and empty.undefined["accuracy"] == "the test split has no images"


def test_f1_of_a_class_absent_and_never_predicted_is_left_out_not_zero():
    """F1 = 2TP / (2TP + FP + FN) is 0/0 for a class with no image and no prediction: left out, not counted 0."""
    t = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 0])
    y, p = np.eye(3, dtype=int)[t], np.eye(3)[pred] * 0.8 + 0.1
    ev = M.evaluate("multiclass", y, p, ["macro_f1"], ["a", "b", "absent"], "test")
    f1_a, f1_b = 2 * 2 / (2 * 2 + 1 + 1), 2 * 2 / (2 * 2 + 1 + 1)
    assert ev.scores["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)   # not (f1_a + f1_b + 0) / 3
    assert ev.excluded["absent"]["metrics"] == ["macro_f1"]
    assert "none predicted (F1 0/0)" in ev.json_excluded()[0]["reason"]


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_bootstrap_metrics_leave_out_the_same_classes(task):
    """The report's vectorised metrics (intervals, paired tests) agree with medtl.metrics on a split with a
    class missing, so check_consistency keeps the fast path and the intervals are of the reported numbers."""
    from medtl.report import significance as S

    rng = np.random.default_rng(3)
    n = 40
    if task == "multilabel":
        y = (rng.random((n, 3)) < [0.4, 0.3, 0.0]).astype(int)
    else:
        y = np.eye(3, dtype=int)[rng.integers(0, 2, n)]
    p = np.round(rng.random((n, 3)), 1)
    if task == "multiclass":
        p[:, 2] = 0.0  # never predicted: F1 0/0
    w = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1 / n), size=10)])
    for m in M.METRICS:
        np.testing.assert_allclose(S.weighted_metric(task, m, y, p, w), S.resampled_metric(task, m, y, p, w),
                                   rtol=1e-9, atol=1e-12, err_msg=f"{task} {m}")


def test_write_json_is_strict_json():
    """A NaN (Python's or NumPy's) becomes null: json.dumps would write bare NaN, which strict readers refuse."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.json"
        write_json(path, {"test": {"auroc": float("nan"), "map": np.float32("nan"), "kappa": np.float64(0.5)},
                          "curve": np.array([0.1, np.inf])})
        data = strict_load(path.read_text())
    assert data == {"test": {"auroc": None, "map": None, "kappa": 0.5}, "curve": [0.1, None]}


# -- training: a tiny store whose splits lack a class ---------------------------------------------------------
def store_without(root, task: str, split: str, cls: int, **kwargs):
    """The conftest tiny store, with no positive image of class ``cls`` in ``split`` (binary/multi-class: those
    images become class 0)."""
    from conftest import tiny_store_arrays

    images, table, meta = tiny_store_arrays(task=task, **kwargs)
    rows = table["split"] == split
    names = meta["classes"]
    table.loc[rows, names[cls]] = 0
    if task != "multilabel":
        table.loc[rows & (table[names].sum(axis=1) == 0), names[0]] = 1

    def fill(out):
        out[:] = images

    write_store(root, len(images), images.shape[1:3], images.shape[3], fill, table, meta)
    return root


def trainer(store_dir, make_net, make_context, monitor, selection=(), epochs=2):
    from conftest import trainer_for
    from medtl.data.store import load_store
    from medtl.strategies import STRATEGIES

    store = load_store(store_dir)
    strategy = STRATEGIES.get("ft")(make_context(make_net("vgg_tiny", n_classes=len(store.classes)), store))
    t = trainer_for(strategy, store, epochs=epochs, batch_size=8, monitor=monitor)
    t.s.classes, t.s.selection = list(store.classes), tuple(selection)
    return t


@pytest.mark.parametrize("monitor, selection, role", [
    ("auroc", (), "selects the best epoch"),
    ("accuracy", ("auroc",), "primary metric, on which the report selects the learning rate"),
])
def test_undefined_validation_metric_that_selects_fails_the_job(monitor, selection, role, tmp_path, make_net,
                                                                 make_context):
    """No positive validation image: AUROC is undefined, so selecting on it would keep an arbitrary epoch or lr
    (before: "best -inf", the first epoch kept, early stop). The job fails saying where, why and what to do."""
    root = store_without(tmp_path / "store", "binary", "val", 1)
    t = trainer(root, make_net, make_context, monitor, selection)
    with pytest.raises(M.UndefinedMetricError) as err:
        t.fit()
    text = str(err.value)
    assert "validation AUROC is undefined after epoch 1" in text
    assert "no positive image of 'c1' among the 10 val images" in text
    assert role in text
    assert "re-split the dataset" in text
    assert ("training.monitor" if monitor == "auroc" else "primary_metric") in text


def test_validation_metric_over_fewer_classes_selects_and_the_log_says_so(tmp_path, make_net, make_context, capsys):
    root = store_without(tmp_path / "store", "multilabel", "val", 2, channels=1)
    t = trainer(root, make_net, make_context, "auroc")
    outcome = t.fit()
    assert math.isfinite(outcome.best_score)
    assert all(math.isfinite(row["val_auroc"]) for row in outcome.history)
    log = capsys.readouterr().err
    # (macro F1 too while the model predicts no c2: that depends on the predictions)
    assert re.search(r"\[train\] val: class 'c2' left out of the macro AUROC, mAP(, macro F1)? \(no positive "
                     r"image of 'c2' among the 10 val images", log)
    assert log.count("left out of the macro") == 1  # said once, not every epoch


def test_job_records_the_classes_left_out_and_writes_strict_json(tmp_path):
    """Through medtl.training.job.run: a test split without positives of c2 gives per-class null, the class in
    excluded_classes with its reason, a macro AUROC over the other classes, and a strictly valid metrics.json."""
    from medtl.training import job

    root = store_without(tmp_path / "store", "multilabel", "test", 2, channels=1)
    hp = {"dataset": {"name": "tiny", "metrics": None, "primary_metric": None},
          "arch": {"name": "vgg_tiny", "weights": {"type": "none"}, "preprocess": {"resize": 32, "crop": 32}},
          "strategy": {"name": "ft", "type": "ft", "settings": {}},
          "training": {"epochs": 1, "batch_size": 16, "patience": 1, "device": "cpu", "optimizer": "adam",
                       "eval_batch_size": 64},
          "lr": 1e-3, "seed": 0}
    out = tmp_path / "out"
    job.run(copy.deepcopy(hp), str(root), None, str(out), str(tmp_path / "resume.ckpt"))
    data = strict_load((out / "metrics.json").read_text())
    assert data["per_class"]["test"]["c2"] == {"auroc": None, "ap": None, "support": 0}
    [entry] = data["excluded_classes"]["test"]
    assert entry["class"] == "c2" and entry["metrics"][:2] == ["auroc", "map"]
    assert "no positive image of 'c2' among the 10 test images" in entry["reason"]
    assert data["excluded_classes"]["val"] == [] and data["undefined_metrics"] == {"val": {}, "test": {}}
    per = data["per_class"]["test"]
    assert data["test"]["auroc"] == pytest.approx((per["c0"]["auroc"] + per["c1"]["auroc"]) / 2)


# -- the report -----------------------------------------------------------------------------------------------
def metrics_record(ds, arch, strategy, lr, seed, test_auroc, val_auroc=0.7, excluded=True):
    rec = {"dataset": ds, "arch": arch, "strategy": strategy, "lr": lr, "seed": seed, "monitor": "auroc",
           "primary_metric": "auroc", "best_epoch": 1, "epochs_run": 2, "device": "cpu", "seconds": 1.0,
           "val": {"auroc": val_auroc, "map": 0.5}, "test": {"auroc": test_auroc, "map": 0.4},
           "per_class": {"val": {}, "test": {"Hernia": {"auroc": None, "ap": None, "support": 0}}},
           "excluded_classes": {"val": [], "test": []}, "undefined_metrics": {"val": {}, "test": {}}}
    if excluded:
        rec["excluded_classes"]["test"] = [{
            "class": "Hernia", "support": 0, "metrics": ["auroc", "map"],
            "reason": "no positive image of 'Hernia' among the 40 test images: left out of these macro means, "
                      "as CheXpert's evaluation leaves out a class without positives"}]
    return rec


def write_runs(root, records):
    files = []
    for rec in records:
        path = (root / "runs" / rec["dataset"] / rec["arch"] / rec["strategy"] / f"lr{rec['lr']:g}"
                / f"seed{rec['seed']}" / "metrics.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, rec)
        files.append(str(path))
    return files


@pytest.fixture
def demo_like(tmp_path):
    """The demo's shape: a CNN with ft, lp and spft on cxr; a ViT with only its SPFT variant (no ft)."""
    records = []
    for seed in (0, 1):
        for arch, strategy, score in (("cnn", "ft", 0.70), ("cnn", "lp", 0.72), ("cnn", "spft", 0.75),
                                      ("vit", "spft_vit", 0.74)):
            records.append(metrics_record("cxr", arch, strategy, 0.001, seed, score + 0.01 * seed))
    return write_runs(tmp_path, records)


def test_heatmap_leaves_out_rows_and_columns_with_nothing_to_show(demo_like, tmp_path, monkeypatch):
    """Before: a whole column (cxr / vit: no ft to compare with) and a row (spft_vit) of n/a."""
    from medtl.report import figures
    from medtl.report.classification import build_report
    from medtl.report.document import CAPTIONS

    drawn = {}
    real = figures._matrix

    def spy(rel, rows, cols):
        drawn.setdefault("calls", []).append((list(rows), list(cols)))
        return real(rel, rows, cols)

    monkeypatch.setattr(figures, "_matrix", spy)
    out = tmp_path / "out"
    build_report(demo_like, str(out), strategy_order=["ft", "lp", "spft", "spft_vit"], arch_order=["cnn", "vit"])
    heatmap_rows, heatmap_cols = drawn["calls"][-1]          # the heatmap is drawn last
    assert heatmap_rows == ["lp", "spft"] and heatmap_cols == [("cxr", "cnn")]
    bars_rows, bars_cols = drawn["calls"][0]                  # the per-dataset bars
    assert bars_rows == ["lp", "spft"] and bars_cols == [("cxr", "cnn")]
    said = ["Left out, columns (no ft run on it to compare with): cxr / vit.",
            "Left out, rows (never ran beside ft on the same dataset and architecture): spft_vit."]
    report_md = (out / "report.md").read_text()
    heatmap_part = report_md.split("(figures/relative_improvement_all.png)")[1].split("### Per dataset")[0]
    for sentence in said:
        assert sentence in heatmap_part
    assert "Left out, architectures (no ft run on it to compare with): cxr / vit." in report_md
    rel_md = (out / "relative_improvement.md").read_text()
    header = next(line for line in rel_md.splitlines() if line.startswith("| Dataset"))
    assert "spft_vit" not in header and "| vit" not in rel_md
    assert "Left out, rows (no ft run on it to compare with): cxr / vit." in rel_md
    assert "Left out, columns (never ran beside ft on the same dataset and architecture): spft_vit." in rel_md
    caption = (CAPTIONS / "classification" / "relative_improvement_all.rst").read_text()
    assert "is left out" in caption and "name each one and why" in caption


def test_report_names_classes_left_out_of_the_macro_means(demo_like, tmp_path, capsys):
    from medtl.report.classification import build_report

    out = tmp_path / "out"
    build_report(demo_like, str(out), strategy_order=["ft", "lp", "spft", "spft_vit"])
    line = ("8 of 8 jobs, class 'Hernia' (macro AUROC, mAP): no positive image of 'Hernia' among the 40 test "
            "images: left out of these macro means, as CheXpert's evaluation leaves out a class without positives.")
    table = (out / "tables" / "cxr.md").read_text()
    assert "Not in the macro means of this table (test split)" in table and line in table
    notes = (out / "report.md").read_text().split("## Notes")[1].split("## Results per dataset")[0]
    assert "cxr, test split, " + line in notes
    assert "[report] warning: cxr, test split, " + line in capsys.readouterr().err


def test_no_lr_is_selected_on_nan(tmp_path):
    """Every learning rate's validation mean undefined: no rate is selected (before: the smallest one, its
    test score reported as if chosen); the cells are n/a and report.md says why."""
    from medtl.report.classification import build_report

    records = [metrics_record("cxr", "cnn", s, lr, seed, 0.7, val_auroc=(None if s == "lp" else 0.7),
                              excluded=False)
               for s in ("ft", "lp") for lr in (0.001, 0.01) for seed in (0, 1)]
    out = tmp_path / "out"
    build_report(write_runs(tmp_path, records), str(out))
    sel = pd.read_csv(out / "selected.csv").set_index("strategy")
    assert sel.loc["lp", "lr_selection"] == "undefined" and math.isnan(sel.loc["lp", "test_auroc_mean"])
    assert sel.loc["ft", "lr_selection"] == "validation" and sel.loc["ft", "test_auroc_mean"] == pytest.approx(0.7)
    assert "No learning rate selected (validation primary metric undefined at every rate tried" in \
           (out / "report.md").read_text()


def test_metrics_missing_beside_predictions_is_named_as_an_interrupted_job(demo_like, tmp_path):
    from pathlib import Path

    from medtl.report.classification import build_report
    from medtl.report.collect import MetricsFileError

    gone = Path(demo_like[0])
    (gone.parent / "predictions.parquet").write_bytes(b"")  # the job got that far
    gone.unlink()
    with pytest.raises(MetricsFileError, match=re.escape("the job was interrupted or the file deleted; "
                                                         "`snakemake` reruns the job")) as err:
        build_report(demo_like, str(tmp_path / "out"))
    assert str(gone) in str(err.value)
    assert not (tmp_path / "out" / "report.md").exists()


# -- the workflow ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_deleted_metrics_json_is_rerun(tmp_path):
    """Snakemake (>= 7.7) reruns no job whose output is missing while the files made from it exist: the
    report's input alone does not bring a deleted metrics.json back. As a target of rule all it does."""
    from workflow_helpers import scheduled_jobs, snakemake, tiny_config, write_config

    cfg = write_config(tmp_path / "config.yaml", tiny_config())
    snakemake(tmp_path, cfg)
    assert scheduled_jobs(tmp_path, cfg) == []
    (tmp_path / "results/runs/synth_derm/vgg_tiny/l2_sp/lr0.001/seed0/metrics.json").unlink()
    jobs = scheduled_jobs(tmp_path, cfg)
    assert ("train", "dataset=synth_derm, arch=vgg_tiny, strategy=l2_sp, lr=0.001, seed=0") in jobs
    assert {"report_classification", "report_published"} <= {rule for rule, _ in jobs}
    snakemake(tmp_path, cfg)
    assert (tmp_path / "results/runs/synth_derm/vgg_tiny/l2_sp/lr0.001/seed0/metrics.json").is_file()
