"""The classification report on synthetic metrics files with known numbers."""
from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest

from medtl.report.classification import build_report, check_complete
from medtl.report.collect import MetricsFileError, collect_runs
from medtl.report.select import mean_se

DATASETS = ["ds_b", "ds_a"]          # given out of order on purpose: the report sorts datasets
ARCHS = ["arch_y", "arch_x"]         # the order passed as arch_order
STRATEGIES = ["ft", "lp", "l2_sp"]
LRS = [0.001, 0.01]
SEEDS = [0, 1, 2]
OFFSETS = [0.0, 0.01, -0.004]        # per-seed noise, same for every group

# test primary metric (map) at the lr that validation selects
TEST = {
    ("ds_a", "arch_x"): {"ft": 0.80, "lp": 0.80 * 1.002, "l2_sp": 0.80 * 1.0005},  # +0.2% counts, +0.05% not
    ("ds_a", "arch_y"): {"ft": 0.70, "lp": 0.69, "l2_sp": 0.75},
    ("ds_b", "arch_x"): {"ft": 0.60, "lp": 0.62, "l2_sp": 0.59},
    ("ds_b", "arch_y"): {"ft": 0.50, "lp": 0.50, "l2_sp": 0.40},                   # ft and lp tie
}
VAL = 0.7


def good_lr(strategy):
    """The lr with the better validation score; lp's is the larger one, so "smallest lr" cannot pass."""
    return 0.01 if strategy == "lp" else 0.001


def scores(ds, arch, strategy, lr, seed):
    off = OFFSETS[seed]
    good = lr == good_lr(strategy)
    base = TEST[(ds, arch)][strategy]
    # the other lr is worse on validation but *better* on test: choosing on test would pick it
    val_map = VAL + off if good else VAL - 0.05 + off
    test_map = base + off if good else base + 0.1 + off
    val = {"map": val_map, "auroc": val_map + 0.1, "macro_f1": val_map - 0.2}
    test = {"map": test_map, "auroc": test_map + 0.1, "macro_f1": test_map - 0.2}
    if (ds, arch, strategy, seed) == ("ds_b", "arch_y", "l2_sp", 0):
        test["macro_f1"] = None  # a null score: that group's macro_f1 mean is NaN
    return val, test


def record(ds, arch, strategy, lr, seed):
    val, test = scores(ds, arch, strategy, lr, seed)
    return {"dataset": ds, "arch": arch, "strategy": strategy, "lr": lr, "seed": seed, "monitor": "map",
            "primary_metric": "map", "best_epoch": 3, "epochs_run": 5, "device": "cpu", "seconds": 1.5,
            "val": val, "test": test,
            "per_class": {"val": {"a": {"auroc": 0.9, "ap": 0.8, "support": 3}}, "test": {}}}


def run_path(root, ds, arch, strategy, lr, seed):
    return root / "runs" / ds / arch / strategy / f"lr{lr:g}" / f"seed{seed}" / "metrics.json"


def write_grid(root):
    files = []
    for ds in DATASETS:
        for arch in ARCHS:
            for strategy in STRATEGIES:
                for lr in LRS:
                    for seed in SEEDS:
                        path = run_path(root, ds, arch, strategy, lr, seed)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(json.dumps(record(ds, arch, strategy, lr, seed)))
                        files.append(str(path))
    return files


def expected_mean_se(values):
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def selected_values(ds, arch, strategy, split="test", metric="map"):
    lr = good_lr(strategy)
    vals = [scores(ds, arch, strategy, lr, s)[0 if split == "val" else 1][metric] for s in SEEDS]
    return expected_mean_se(vals)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    files = write_grid(root)
    out = root / "out"
    written = build_report(files, str(out), reference="ft", threshold=0.001,
                           strategy_order=STRATEGIES, arch_order=ARCHS)
    return {"files": files, "out": out, "written": written}


def read(report, name):
    return pd.read_csv(report["out"] / name)


def test_written_files(report):
    expected = {"all_runs.csv", "per_lr.csv", "selected.csv", "relative_improvement.csv",
                "relative_improvement.md", "best_method.csv", "best_method.md", "effectiveness.csv",
                "effectiveness.md", "report.md", "figures/relative_improvement_all.png",
                "table11.csv", "table11.md", "table12.csv", "table12.md", "cost.csv", "cost.md",
                "verdict_friedman.csv", "verdict_friedman.md", "verdict_bayes.csv", "verdict_bayes.md",
                "verdict_modality.csv", "verdict_modality.md", "figures/critical_difference.png",
                *(f"tables/{d}.{e}" for d in DATASETS for e in ("csv", "md")),
                *(f"figures/relative_improvement_{d}.png" for d in DATASETS)}
    assert set(report["written"]) == expected
    for rel_path, path in report["written"].items():
        assert path == str(report["out"] / rel_path)
        assert (report["out"] / rel_path).stat().st_size > 0
    assert not list(report["out"].rglob("*.tmp"))  # atomic writes left nothing behind


def test_all_runs_has_every_job(report):
    runs = read(report, "all_runs.csv")
    assert len(runs) == len(report["files"]) == 2 * 2 * 3 * 2 * 3
    assert set(runs["file"]) == set(report["files"])
    for col in ("dataset", "arch", "strategy", "lr", "seed", "best_epoch", "epochs_run", "seconds",
                "val_map", "val_auroc", "val_macro_f1", "test_map", "test_auroc", "test_macro_f1"):
        assert col in runs
    row = runs[(runs.dataset == "ds_a") & (runs.arch == "arch_x") & (runs.strategy == "lp")
               & (runs.lr == 0.001) & (runs.seed == 1)].iloc[0]
    val, test = scores("ds_a", "arch_x", "lp", 0.001, 1)
    assert row["val_map"] == pytest.approx(val["map"], abs=1e-12)
    assert row["test_auroc"] == pytest.approx(test["auroc"], abs=1e-12)
    assert runs["test_macro_f1"].isna().sum() == len(LRS)  # the null, at both lrs of one seed
    # rows in a stable order: datasets sorted, archs and strategies in the given order
    assert list(dict.fromkeys(runs["dataset"])) == ["ds_a", "ds_b"]
    assert list(dict.fromkeys(runs["arch"])) == ARCHS
    assert list(dict.fromkeys(runs["strategy"])) == STRATEGIES


def test_lr_selected_on_mean_validation_not_test(report):
    sel = read(report, "selected.csv")
    assert len(sel) == 2 * 2 * 3
    for r in sel.itertuples():
        assert r.lr == good_lr(r.strategy), (r.dataset, r.arch, r.strategy)
        assert r.n_seeds == 3
    # the trap is real: the other lr has the higher mean test score
    per_lr = read(report, "per_lr.csv")
    lp = per_lr[(per_lr.dataset == "ds_a") & (per_lr.arch == "arch_x") & (per_lr.strategy == "lp")]
    assert lp.set_index("lr").loc[0.001, "test_map_mean"] > lp.set_index("lr").loc[0.01, "test_map_mean"]


def test_mean_and_standard_error(report):
    sel = read(report, "selected.csv").set_index(["dataset", "arch", "strategy"])
    for ds, arch in TEST:
        for s in STRATEGIES:
            for split in ("val", "test"):
                for metric in ("map", "auroc"):
                    mean, se = selected_values(ds, arch, s, split, metric)
                    assert sel.loc[(ds, arch, s), f"{split}_{metric}_mean"] == pytest.approx(mean, abs=1e-12)
                    assert sel.loc[(ds, arch, s), f"{split}_{metric}_se"] == pytest.approx(se, abs=1e-12)
    # a null score in one seed makes that group's mean NaN rather than a mean over fewer seeds
    assert math.isnan(sel.loc[("ds_b", "arch_y", "l2_sp"), "test_macro_f1_mean"])
    assert not math.isnan(sel.loc[("ds_b", "arch_y", "lp"), "test_macro_f1_mean"])


def test_mean_se_conventions():
    assert mean_se([0.5]) == (0.5, pytest.approx(math.nan, nan_ok=True))
    assert math.isnan(mean_se([0.5])[1])
    mean, se = mean_se([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert se == pytest.approx(statistics.stdev([1, 2, 4]) / math.sqrt(3))
    assert all(math.isnan(v) for v in mean_se([1.0, float("nan")]))


def test_dataset_table_and_bold(report):
    table = read(report, "tables/ds_a.csv").set_index("strategy")
    assert list(table.index) == STRATEGIES
    assert table["best_arch_x_map"].tolist() == [False, True, False]      # lp best on ds_a/arch_x
    assert table["best_arch_y_map"].tolist() == [False, False, True]      # l2_sp best on ds_a/arch_y
    mean, se = selected_values("ds_a", "arch_x", "lp")
    assert table.loc["lp", "arch_x_map"] == f"{mean:.3f} ± {se:.3f}"
    assert table.loc["lp", "arch_x_map_mean"] == pytest.approx(mean, abs=1e-12)

    md = (report["out"] / "tables" / "ds_a.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("|")}
    assert f"**{mean:.3f} ± {se:.3f}**" in rows["lp"]
    ft_mean, ft_se = selected_values("ds_a", "arch_x", "ft")
    assert f"{ft_mean:.3f} ± {ft_se:.3f}" in rows["ft"]
    assert f"**{ft_mean:.3f} ± {ft_se:.3f}**" not in rows["ft"]
    header = md.splitlines()[[i for i, l in enumerate(md.splitlines()) if l.startswith("|")][0]]
    cells = [c.strip() for c in header.split("|")[1:-1]]
    assert cells[:3] == ["Strategy", "arch_y / mAP", "arch_y / AUROC"]   # arch_order respected
    col = cells.index("arch_x / mAP")
    assert [c.strip() for c in rows["lp"].split("|")[1:-1]][col].startswith("**")
    assert not [c.strip() for c in rows["l2_sp"].split("|")[1:-1]][col].startswith("**")

    # ties: ft and lp are both best on ds_b/arch_y; a NaN cell is n/a and never best
    table_b = read(report, "tables/ds_b.csv").set_index("strategy")
    assert table_b["best_arch_y_map"].tolist() == [True, True, False]
    assert pd.isna(table_b.loc["l2_sp", "arch_y_macro_f1"])   # "n/a", which read_csv reads as NaN
    assert "| n/a" in (report["out"] / "tables" / "ds_b.md").read_text()
    assert not table_b.loc["l2_sp", "best_arch_y_macro_f1"]


def test_relative_improvement_formula(report):
    rel = read(report, "relative_improvement.csv").set_index(["dataset", "arch", "strategy"])
    for ds, arch in TEST:
        ref = selected_values(ds, arch, "ft")[0]
        for s in STRATEGIES:
            m = selected_values(ds, arch, s)[0]
            assert rel.loc[(ds, arch, s), "relative_improvement_pct"] == pytest.approx(100 * (m - ref) / ref,
                                                                                        rel=1e-9, abs=1e-9)
            assert rel.loc[(ds, arch, s), "reference_test_mean"] == pytest.approx(ref, abs=1e-12)
    assert rel.loc[("ds_a", "arch_y", "ft"), "relative_improvement_pct"] == 0
    # against hand-computed numbers: lp on ds_b/arch_x, (0.622 - 0.602) / 0.602
    assert rel.loc[("ds_b", "arch_x", "lp"), "relative_improvement_pct"] == pytest.approx(
        100 * 0.02 / (0.60 + sum(OFFSETS) / 3), rel=1e-9)
    assert rel.loc[("ds_a", "arch_y", "lp"), "relative_improvement_pct"] < 0
    md = (report["out"] / "relative_improvement.md").read_text()
    assert "| ds_a" in md and "l2_sp" in md


def test_best_method(report):
    best = read(report, "best_method.csv").set_index(["dataset", "arch"])
    assert best["best_strategy"].to_dict() == {
        ("ds_a", "arch_y"): "l2_sp", ("ds_a", "arch_x"): "lp",
        ("ds_b", "arch_y"): "ft", ("ds_b", "arch_x"): "lp"}    # ft/lp tie -> first in strategy order
    assert best.loc[("ds_b", "arch_y"), "tied_with"] == "lp"
    m, se = selected_values("ds_a", "arch_y", "l2_sp")
    ref = selected_values("ds_a", "arch_y", "ft")[0]
    assert best.loc[("ds_a", "arch_y"), "test_mean"] == pytest.approx(m, abs=1e-12)
    assert best.loc[("ds_a", "arch_y"), "test_se"] == pytest.approx(se, abs=1e-12)
    assert best.loc[("ds_a", "arch_y"), "gain_pct"] == pytest.approx(100 * (m - ref) / ref)
    assert best.loc[("ds_a", "arch_y"), "lr"] == 0.001
    assert best.loc[("ds_b", "arch_x"), "lr"] == 0.01
    assert "l2_sp" in (report["out"] / "best_method.md").read_text()


def test_effectiveness_threshold(report):
    eff = read(report, "effectiveness.csv").set_index("strategy")
    assert list(eff.index) == ["lp", "l2_sp"]                   # the reference is not compared with itself
    # lp: +0.2% on ds_a/arch_x counts, +3.3% on ds_b/arch_x counts, a tie and a loss do not
    assert eff.loc["lp", "n_better"] == 2
    assert eff.loc["lp", "n_pairs"] == 4
    assert eff.loc["lp", "n_worse"] == 1
    assert set(eff.loc["lp", "effective_on"].split()) == {"ds_a/arch_x", "ds_b/arch_x"}
    # l2_sp: +0.05% on ds_a/arch_x is below the 0.1% threshold; only ds_a/arch_y counts
    assert eff.loc["l2_sp", "n_better"] == 1
    assert eff.loc["l2_sp", "effective_on"] == "ds_a/arch_y"
    md = (report["out"] / "effectiveness.md").read_text()
    assert "2 / 4" in md and "1 / 4" in md


def test_effectiveness_threshold_is_a_parameter(tmp_path):
    files = write_grid(tmp_path)
    build_report(files, str(tmp_path / "out"), threshold=0.0001, strategy_order=STRATEGIES)
    eff = pd.read_csv(tmp_path / "out" / "effectiveness.csv").set_index("strategy")
    assert eff.loc["l2_sp", "n_better"] == 2   # 0.05% now clears a 0.01% threshold


def test_figures_are_pngs(report):
    for name in ["all", *DATASETS]:
        data = (report["out"] / "figures" / f"relative_improvement_{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 5000


def test_report_md_includes_everything(report):
    text = (report["out"] / "report.md").read_text()
    for name in ("tables/ds_a.csv", "tables/ds_b.md", "selected.csv", "all_runs.csv", "relative_improvement.csv",
                 "best_method.csv", "effectiveness.csv", "figures/relative_improvement_all.png",
                 "figures/relative_improvement_ds_a.png"):
        assert f"({name})" in text, name
    assert (report["out"] / "tables" / "ds_a.md").read_text() in text
    assert (report["out"] / "effectiveness.md").read_text() in text
    assert "NaN" in text  # the null macro_f1 is reported in the notes


# -- refusing bad input -------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    files = []
    for s in ("ft", "lp"):
        for seed in (0, 1):
            path = run_path(tmp_path, "ds_a", "arch_x", s, 0.001, seed)
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(record("ds_a", "arch_x", s, 0.001, seed)))
            files.append(str(path))
    return files


def test_small_grid_builds(small, tmp_path):
    written = build_report(small, str(tmp_path / "out"))
    assert "report.md" in written


def test_missing_file_is_named(small, tmp_path):
    gone = small[1]
    import os
    os.remove(gone)
    with pytest.raises(ValueError, match="missing") as err:
        build_report(small, str(tmp_path / "out"))
    assert gone in str(err.value)
    assert not (tmp_path / "out" / "report.md").exists()


def test_malformed_json_is_named(small, tmp_path):
    with open(small[2], "w") as f:
        f.write('{"dataset": "ds_a", "arch": ')  # a job killed mid-write
    with pytest.raises(ValueError, match="not valid JSON") as err:
        build_report(small, str(tmp_path / "out"))
    assert small[2] in str(err.value)


@pytest.mark.parametrize("key", ["test", "primary_metric", "lr", "seed"])
def test_missing_key_is_named(small, tmp_path, key):
    data = json.loads(open(small[0]).read())
    del data[key]
    with open(small[0], "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match=key) as err:
        build_report(small, str(tmp_path / "out"))
    assert small[0] in str(err.value)


def test_primary_metric_missing_from_split(small, tmp_path):
    data = json.loads(open(small[0]).read())
    del data["val"]["map"]
    with open(small[0], "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match="primary metric") as err:
        collect_runs(small)
    assert small[0] in str(err.value)


def test_duplicate_job_names_both_files(small, tmp_path):
    # the same job's content under another seed's folder would also be caught by the path check;
    # here a copy sits outside the results layout, so only the duplicate key can catch it
    copy = tmp_path / "elsewhere" / "metrics.json"
    copy.parent.mkdir()
    copy.write_text(open(small[0]).read())
    with pytest.raises(ValueError, match="duplicate") as err:
        build_report([*small, str(copy)], str(tmp_path / "out"))
    assert str(copy) in str(err.value) and small[0] in str(err.value)
    with pytest.raises(ValueError, match="duplicate"):
        collect_runs([*small, small[0]])                       # the same file listed twice


def test_contents_must_match_path(small):
    data = json.loads(open(small[0]).read())
    data["seed"] = 7
    with open(small[0], "w") as f:
        json.dump(data, f)
    with pytest.raises(MetricsFileError, match="do not match its path") as err:
        collect_runs(small)
    assert small[0] in str(err.value)


def test_non_numeric_score_is_named(small):
    data = json.loads(open(small[3]).read())
    data["test"]["auroc"] = "high"
    with open(small[3], "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match="test.auroc") as err:
        collect_runs(small)
    assert small[3] in str(err.value)


def test_check_complete(small, tmp_path):
    check_complete(small, 4)
    with pytest.raises(ValueError, match="expected 5"):
        check_complete(small, 5)
    with pytest.raises(ValueError, match="missing"):
        check_complete([*small, str(tmp_path / "nope.json")], 5)
    with pytest.raises(ValueError, match="expected 5"):
        build_report(small, str(tmp_path / "out"), expected=5)


def test_missing_reference_is_refused(small, tmp_path):
    with pytest.raises(ValueError, match="reference strategy 'l1_sp'"):
        build_report(small, str(tmp_path / "out"), reference="l1_sp")


def test_lr_ties_and_nan_are_deterministic(tmp_path):
    files = []
    for lr, val in ((0.003, 0.7), (0.001, 0.7), (0.0001, float("nan"))):
        for seed in (0, 1):
            for s in ("ft",):
                rec = record("ds_a", "arch_x", s, lr, seed)
                rec["val"]["map"] = val
                path = run_path(tmp_path, "ds_a", "arch_x", s, lr, seed)
                path.parent.mkdir(parents=True)
                path.write_text(json.dumps(rec))          # Python writes NaN, which json reads back
                files.append(str(path))
    build_report(files, str(tmp_path / "out"))
    sel = pd.read_csv(tmp_path / "out" / "selected.csv")
    assert sel["lr"].tolist() == [0.001]   # equal means -> the smaller lr; the NaN lr is never chosen
    assert sel["n_lrs"].tolist() == [3]


def test_effectiveness_table_names_strategies_that_never_ran_beside_the_reference():
    """A strategy restricted to an architecture without the reference (the demo's ViT SPFT ablation) has no
    pair: the Markdown table leaves it out and names it below; the CSV keeps every strategy."""
    from medtl.report.tables import effectiveness, effectiveness_markdown

    rel = pd.DataFrame({"dataset": ["d", "d"], "arch": ["cnn", "cnn"], "strategy": ["lp", "l2_sp"],
                        "relative_change": [0.05, -0.02], "effective": [True, False]})
    eff = effectiveness(rel, ["ft", "lp", "l2_sp", "spft_vit"], "ft", 0.001)
    assert list(eff["strategy"]) == ["lp", "l2_sp", "spft_vit"] and eff["n_pairs"].tolist() == [1, 1, 0]
    md = effectiveness_markdown(eff, "ft", 0.001)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["lp", "l2_sp"]
    assert "Not compared (no ft run on the same dataset and architecture): spft_vit." in md
