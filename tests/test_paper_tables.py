"""The first paper's Tables 11 and 12 (best method per dataset, effectiveness per architecture): the pure
functions on a hand-made frame, the reference file's summary sections and their validation, the recount of
the printed tables from the published Tables 3-10, and the second paper's statistics (runs, means, single
numbers) as the side-by-side tables use them."""
from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.report.published import (MATCHED, ReferenceError, build_published_report, load_reference,
                                    parse_reference, published_main_scores, published_only, recount_table11,
                                    recount_table12, side_by_side)
from medtl.report.tables import TOTAL, best_per_dataset, effectiveness_counts, table11_markdown, table12_markdown

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "references" / "published.yaml"


def squash(markdown: str) -> str:
    """Markdown with the column padding removed: '| a | b |'."""
    return re.sub(r" +", " ", markdown)


# -- the pure functions, on a frame whose answers are worked out by hand -----------------------------------------
def hand_frame() -> pd.DataFrame:
    scores = {  # (dataset, arch) -> {strategy: main-metric mean}
        ("d1", "a1"): {"ft": 0.80, "lp": 0.84, "x": 0.81},
        ("d1", "a2"): {"ft": 0.90, "lp": 0.85, "x": 0.9005},
        ("d2", "a1"): {"ft": 0.50, "lp": 0.40, "x": 0.60},
        ("d2", "a2"): {"ft": 0.70, "lp": 0.72, "x": math.nan},
        ("d3", "a1"): {"ft": 0.70, "lp": 0.60, "x": 0.65},
        ("d3", "a2"): {"ft": 0.65, "lp": 0.70, "x": 0.65},
    }
    return pd.DataFrame([{"dataset": d, "arch": a, "strategy": s, "metric": "m", "mean": v, "lr": 1e-3}
                         for (d, a), row in scores.items() for s, v in row.items()])


def test_table11_best_over_every_architecture_and_gain_over_the_same_architectures_reference():
    t = best_per_dataset(hand_frame(), "ft", archs=["a1", "a2"], strategies=["ft", "lp", "x"]).set_index("dataset")
    # d1: the best of all six is a2/x (0.9005), against a2's ft (0.90): 0.0005 / 0.90
    assert (t.loc["d1", "arch"], t.loc["d1", "strategy"]) == ("a2", "x")
    assert t.loc["d1", "reference_mean"] == 0.90 and t.loc["d1", "gain_pct"] == pytest.approx(100 * 0.0005 / 0.90)
    # d2: a2/lp (0.72) against a2's ft (0.70), not a1's (0.50); the NaN never wins
    assert (t.loc["d2", "arch"], t.loc["d2", "strategy"]) == ("a2", "lp")
    assert t.loc["d2", "gain_pct"] == pytest.approx(100 * 0.02 / 0.70)
    # d3: a1/ft and a2/lp tie at 0.70: the first in (arch, strategy) order wins, gain 0, the tie is listed
    assert (t.loc["d3", "arch"], t.loc["d3", "strategy"], t.loc["d3", "gain_pct"]) == ("a1", "ft", 0.0)
    assert t.loc["d3", "tied_with"] == "a2/lp" and t.loc["d1", "tied_with"] == ""
    assert list(t["n_candidates"]) == [6, 6, 6] and list(t["metric"]) == ["m"] * 3
    assert t.loc["d1", "lr"] == 1e-3  # other columns of the winner follow
    md = squash(table11_markdown(t.reset_index(), "ft"))
    assert "| d2 | m | a2 | lp | 0.720 | 0.700 | +2.86 |" in md and "d3: a1/ft ties with a2/lp" in md


def test_table12_leaves_out_what_is_never_compared_with_the_reference():
    """An architecture that never ran the reference (a ViT that only runs an SPFT ablation) has no column, and a
    strategy with no comparable pair (that ablation's variants) no row."""
    extra = pd.DataFrame({"dataset": ["d1", "d1"], "arch": ["vit", "vit"], "strategy": ["spft_a", "spft_b"],
                          "mean": [0.7, 0.8]})
    frame = pd.concat([hand_frame(), extra], ignore_index=True)
    t = effectiveness_counts(frame, "ft", 0.001).set_index("strategy")
    assert "vit" not in t.columns and not {"spft_a", "spft_b"} & set(t.index)
    plain = effectiveness_counts(hand_frame(), "ft", 0.001).set_index("strategy")
    assert t.loc[TOTAL, "n_experiments"] == plain.loc[TOTAL, "n_experiments"]


def test_table12_counts_per_architecture_total_and_effectiveness():
    t = effectiveness_counts(hand_frame(), "ft", 0.001, archs=["a1", "a2"],
                             strategies=["ft", "lp", "x"]).set_index("strategy")
    assert list(t.index) == ["lp", "x", TOTAL]  # the reference is not counted against itself
    # lp beats ft: d1/a1 (+5%), d2/a2 (+2.9%), d3/a2 (+7.7%); x: d1/a1 (+1.25%), d2/a1 (+20%);
    # x on d1/a2 is +0.056%, under the 0.1% threshold; x on d2/a2 is NaN (not comparable)
    assert (t.loc["lp", "a1"], t.loc["lp", "a2"], t.loc["lp", "total"]) == (1, 2, 3)
    assert (t.loc["x", "a1"], t.loc["x", "a2"], t.loc["x", "total"]) == (2, 0, 2)
    assert t.loc["lp", "n_experiments"] == 6 and t.loc["x", "n_not_comparable"] == 1
    assert t.loc["lp", "effectiveness_pct"] == pytest.approx(50.0)
    assert t.loc["x", "effectiveness_pct"] == pytest.approx(100 * 2 / 6)
    assert (t.loc[TOTAL, "a1"], t.loc[TOTAL, "a2"], t.loc[TOTAL, "total"], t.loc[TOTAL, "n_experiments"]) == (3, 2, 5, 12)
    assert t.loc[TOTAL, "effectiveness_pct"] == pytest.approx(100 * 5 / 12)
    # a lower threshold counts x on d1/a2 (+0.056%) too
    loose = effectiveness_counts(hand_frame(), "ft", 0.0001, archs=["a1", "a2"]).set_index("strategy")
    assert loose.loc["x", "a2"] == 1
    md = squash(table12_markdown(t.reset_index(), ["a1", "a2"], "ft", 0.001))
    assert "| lp | 1 | 2 | 3 | 50.0 |" in md and "| **Total** | 3 | 2 | 5 | 41.7 |" in md and "lack a score" in md


def test_the_functions_refuse_an_ambiguous_frame():
    frame = hand_frame()
    with pytest.raises(ValueError, match="twice"):
        best_per_dataset(pd.concat([frame, frame.head(1)]), "ft")
    with pytest.raises(ValueError, match="lack column"):
        effectiveness_counts(frame.drop(columns="mean"), "ft")


# -- the reference file: the printed Tables 11 and 12 and their recount from Tables 3-10 ------------------------
PRINTED_TABLE11 = [  # typed from the paper's Table 11: dataset, architecture, method, improvement (%)
    ("chexpert", "resnet50", "lp_ft", 1.9), ("mura_shoulder", "vgg19", "auto_rgn", 4.7),
    ("mura_wrist", "vgg19", "l1_sp", 2.2), ("mura_humerus", "densenet121", "lp_ft", 1.5),
    ("brain_tumor_mri", "vgg19", "ft", 0.0), ("bach", "densenet121", "auto_rgn", 11.1),
    ("isic2020", "densenet121", "lp", 20.8), ("cholect50", "resnet50", "l1_sp", 1.6),
]


def test_the_recount_of_table11_from_tables_3_to_10_reproduces_the_printed_table():
    ref = load_reference(REFERENCE_FILE)
    t11 = recount_table11(ref)
    assert len(t11) == 8 and t11["agrees"].all()
    got = [(r.dataset, r.arch, r.strategy, round(r.gain_pct, 1)) for r in t11.itertuples()]
    assert got == [(d, a, s, pytest.approx(g, abs=1e-9)) for d, a, s, g in PRINTED_TABLE11]
    assert [(r.printed_arch, r.printed_strategy, r.printed_gain_pct) for r in t11.itertuples()] == \
        [(a, s, g) for _, a, s, g in PRINTED_TABLE11]


def test_the_printed_table12_is_in_the_file_and_its_recount_is_set_beside_it():
    ref = load_reference(REFERENCE_FILE)
    eff = ref.effectiveness["davila2024"]
    assert eff["archs"] == ["resnet50", "densenet121", "vgg19"] and eff["threshold"] == pytest.approx(0.001)
    rows = eff["rows"].set_index("strategy")
    # the printed table is consistent with itself: row totals, column totals, effectiveness = total / 24
    assert (rows[eff["archs"]].sum(axis=1) == rows["total"]).all()
    assert rows[eff["archs"]].sum().to_dict() == eff["totals"] == {"resnet50": 17, "densenet121": 24, "vgg19": 15}
    assert np.allclose(rows["total"] / 24 * 100, rows["effectiveness_pct"], atol=0.05)
    t12 = recount_table12(ref).set_index("strategy")
    assert list(t12.index) == [*rows.index, TOTAL]
    for arch in eff["archs"]:
        assert list(t12[f"{arch}_printed"]) == [*rows[arch], eff["totals"][arch]]
    # the recount's own arithmetic: 8 datasets x 3 architectures per strategy
    assert (t12.loc[t12.index != TOTAL, "n_experiments"] == 24).all()
    assert (t12[[f"{a}_recount" for a in eff["archs"]]].sum(axis=1) == t12["total_recount"]).all()
    # as the papers' README says, the printed counts cannot be recomputed from Tables 3-10
    assert not t12["agrees"].all()


def test_a_printed_summary_the_recount_does_not_reproduce_is_flagged():
    data = copy.deepcopy(BASE)
    study = data["studies"]["s"]
    study["tables"] = [{"source": "Table 1", "dataset": "d1", "metric": "map", "rows": [
        {"arch": "a", "strategy": "ft", "value": 0.50}, {"arch": "a", "strategy": "lp", "value": 0.51},
        {"arch": "b", "strategy": "ft", "value": 0.40}, {"arch": "b", "strategy": "lp", "value": 0.40}]}]
    # the recount: a/lp is best, +2.0 % over a/ft; lp beats ft on a (1 of 1 dataset), not on b
    row = recount_table11(parse_reference(data)).iloc[0]  # printed: a/lp, +1.5 %
    assert (row["arch"], row["strategy"], row["gain_pct"]) == ("a", "lp", pytest.approx(2.0))
    assert row["same_method"] and not row["same_gain"] and not row["agrees"]
    study["best_per_dataset"]["rows"][0]["gain_pct"] = 2.04  # rounds to the recount: reproduced
    assert recount_table11(parse_reference(data))["agrees"].all()
    study["best_per_dataset"]["rows"][0]["arch"] = "b"
    row = recount_table11(parse_reference(data)).iloc[0]
    assert not row["same_method"] and row["same_gain"] and not row["agrees"]
    t12 = recount_table12(parse_reference(data)).set_index("strategy")  # printed: lp a 1, b 0, total 1, 50 %
    assert t12["agrees"].all() and t12.loc["lp", "effectiveness_pct_recount"] == pytest.approx(50.0)
    study["effectiveness"]["rows"][0]["counts"]["b"] = 1
    t12 = recount_table12(parse_reference(data)).set_index("strategy")
    assert (t12.loc["lp", "b_printed"], t12.loc["lp", "b_recount"]) == (1, 0) and not t12.loc["lp", "agrees"]


def test_published_main_scores_are_the_main_metric_of_every_setting():
    ref = load_reference(REFERENCE_FILE)
    scores = published_main_scores(ref, "davila2024")
    assert len(scores) == 8 * 3 * 8 and not scores.duplicated(["dataset", "arch", "strategy"]).any()
    assert dict(zip(scores["dataset"], scores["metric"])) == ref.main_metrics["davila2024"]
    row = scores[(scores["dataset"] == "isic2020") & (scores["arch"] == "densenet121") & (scores["strategy"] == "lp")]
    assert row["mean"].iloc[0] == pytest.approx(0.8612)  # Table 9, AUROC


def test_the_second_papers_means_and_sds_follow_from_its_runs():
    rows = load_reference(REFERENCE_FILE).rows
    rows = rows[rows["study"] == "spft_rad_dino"]
    for dataset, kind, ddof in (("ham10000", "sd_pop", 0), ("chestxray14", "sd", 1)):
        runs = rows[(rows["dataset"] == dataset) & (rows["statistic"] == "run")]
        means = rows[(rows["dataset"] == dataset) & (rows["statistic"] == "mean")].set_index("class")
        assert set(means["spread_kind"]) == {kind} and len(means) == runs["class"].nunique()
        for name, g in runs.groupby("class"):
            values = g.sort_values("run")["value"].to_numpy()
            assert len(values) == 3
            assert values.mean() == pytest.approx(means.loc[name, "value"], abs=5e-5 + 1e-12), (dataset, name)
            # the printed SDs follow the runs to within 4e-4 (HAM10000 df: 0.0394 from the runs, 0.0397 printed)
            assert values.std(ddof=ddof) == pytest.approx(means.loc[name, "spread"], abs=4e-4), (dataset, name)


# -- validation of the new sections ------------------------------------------------------------------------------
BASE = {"studies": {"s": {
    "citation": "c", "source": "arXiv:1", "obtained": True,
    "main_metrics": {"source": "Table 9", "datasets": {"d1": "map"}},
    "best_per_dataset": {"source": "Table 11", "reference": "ft",
                         "rows": [{"dataset": "d1", "arch": "a", "strategy": "lp", "gain_pct": 1.5}]},
    "effectiveness": {"source": "Table 12", "reference": "ft", "threshold_pct": 0.1,
                      "rows": [{"strategy": "lp", "counts": {"a": 1, "b": 0}, "total": 1, "effectiveness_pct": 50.0}],
                      "totals": {"a": 1, "b": 0}},
    "tables": [{"source": "Table 1", "dataset": "d1", "metric": "map", "rows": [
        {"arch": "a", "strategy": "ft", "value": 0.5}]}]}}}


def edited(path: str, value=None, delete: bool = False) -> dict:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data["studies"]["s"]
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if delete:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


def test_the_summary_sections_are_read():
    ref = parse_reference(BASE)
    assert ref.main_metrics == {"s": {"d1": "map"}}
    assert ref.best.iloc[0][["dataset", "arch", "strategy", "gain_pct"]].tolist() == ["d1", "a", "lp", 1.5]
    assert ref.best.iloc[0]["source"] == "arXiv:1, Table 11"
    assert ref.effectiveness["s"]["threshold"] == pytest.approx(0.001)
    assert ref.effectiveness["s"]["rows"].columns.tolist() == ["strategy", "a", "b", "total", "effectiveness_pct"]
    assert "main_metrics" not in ref.studies["s"]


@pytest.mark.parametrize("path, value, delete, message", [
    ("main_metrics", None, True, r"studies.s.best_per_dataset: needs the study's main_metrics"),
    ("main_metrics.datasets", {"d1": "mAP"}, False, r"main_metrics.datasets.d1: 'mAP' is not a metric name"),
    ("main_metrics.source", None, True, r"main_metrics: 'source' is required"),
    ("best_per_dataset.rows.0", {"dataset": "d1", "arch": "a", "strategy": "lp"}, False,
     r"best_per_dataset.rows\[0\]: 'gain_pct' is required"),
    ("best_per_dataset.rows.0", {"dataset": "d2", "arch": "a", "strategy": "lp", "gain_pct": 1}, False,
     r"best_per_dataset.rows\[0\]: dataset 'd2' has no main metric"),
    ("best_per_dataset.rows.0", {"dataset": "d1", "arch": "a", "strategy": "LP FT", "gain_pct": 1}, False,
     r"best_per_dataset.rows\[0\].strategy: 'LP FT' is not a workflow name"),
    ("best_per_dataset.rows.0", {"dataset": "d1", "arch": "a", "strategy": "lp", "gain_pct": "1.9%"}, False,
     r"best_per_dataset.rows\[0\].gain_pct: expected a number"),
    ("best_per_dataset.reference", None, True, r"best_per_dataset: 'reference' is required"),
    ("effectiveness.rows.0", {"strategy": "lp", "counts": {"a": -1, "b": 0}, "total": 1, "effectiveness_pct": 5},
     False, r"effectiveness.rows\[0\].counts.a: expected a count"),
    ("effectiveness.rows.0", {"strategy": "ft", "counts": {"a": 1, "b": 0}, "total": 1, "effectiveness_pct": 5},
     False, r"effectiveness.rows\[0\]: the reference 'ft' is not counted against itself"),
    ("effectiveness.rows.0", {"strategy": "lp", "counts": {"a": 1}, "total": 1.5, "effectiveness_pct": 5},
     False, r"effectiveness.rows\[0\].total: expected a count"),
    ("effectiveness.rows.0", {"strategy": "lp", "counts": {"a": 1}, "effectiveness_pct": 5, "pct": 1},
     False, r"effectiveness.rows\[0\]: unknown keys \['pct'\]"),
    ("effectiveness.totals", {"a": 1}, False, r"effectiveness.totals: expected a mapping of the rows' architectures"),
    ("effectiveness.threshold_pct", -1, False, r"effectiveness.threshold_pct: must be >= 0"),
    ("effectiveness.rows", [], False, r"effectiveness.rows: expected a non-empty list"),
    ("table12", {}, False, r"studies.s: unknown keys \['table12'\]"),
])
def test_invalid_summary_sections_are_refused_naming_the_entry(path, value, delete, message):
    with pytest.raises(ReferenceError, match=message):
        parse_reference(edited(path, value, delete))


def test_rows_with_differing_architectures_in_table12_are_refused():
    data = copy.deepcopy(BASE)
    data["studies"]["s"]["effectiveness"]["rows"].append(
        {"strategy": "l1_sp", "counts": {"b": 0, "a": 1}, "total": 1, "effectiveness_pct": 50.0})
    with pytest.raises(ReferenceError, match=r"rows\[1\].counts: architectures \['b', 'a'\] differ"):
        parse_reference(data)


def _table(**table):
    return {"studies": {"s": {"citation": "c", "source": "arXiv:1", "obtained": True,
                              "tables": [{"source": "Table 1", "dataset": "d", "arch": "a", "metric": "auroc",
                                          **table}]}}}


@pytest.mark.parametrize("table, message", [
    ({"statistic": "median", "rows": [{"strategy": "ft", "value": 0.8}]}, r"statistic: one of"),
    ({"statistic": "run", "rows": [{"strategy": "ft", "value": 0.8}]}, r"needs the run's number"),
    ({"rows": [{"strategy": "ft", "value": 0.8, "run": 1}]}, r"only a row with statistic 'run' names a run"),
    ({"statistic": "single", "spread": "sd", "rows": [{"strategy": "ft", "value": 0.8, "spread": 0.1}]},
     r"only a mean over runs has a spread"),
    ({"n_runs": 0, "rows": [{"strategy": "ft", "value": 0.8}]}, r"n_runs: expected the number of runs"),
    ({"rows": [{"strategy": "ft", "value": 0.8, "metric": "AUC"}]}, r"rows\[0\].metric: 'AUC' is not a metric name"),
    ({"spread": "std", "rows": [{"strategy": "ft", "value": 0.8}]}, r"spread: one of"),
])
def test_invalid_statistics_are_refused(table, message):
    with pytest.raises(ReferenceError, match=message):
        parse_reference(_table(**table))


def test_the_same_number_in_two_tables_is_kept_once_and_another_number_is_refused():
    data = _table(statistic="single", rows=[{"strategy": "ft", "value": 0.8}])
    data["studies"]["s"]["tables"].append({"source": "Table 2", "dataset": "d", "arch": "a", "metric": "auroc",
                                           "statistic": "single", "rows": [{"strategy": "ft", "value": 0.8}]})
    ref = parse_reference(data)
    assert len(ref.rows) == 1 and ref.rows["source"].iloc[0] == "arXiv:1, Table 1; Table 2"
    data["studies"]["s"]["tables"][1]["rows"][0]["value"] = 0.81
    with pytest.raises(ReferenceError, match=r"tables\[1\].rows\[0\]: .* already given at .*tables\[0\].rows\[0\]"):
        parse_reference(data)


# -- the side-by-side table: which published number is the counterpart, and Δ in published SEs -----------------
def test_side_by_side_prefers_the_mean_and_gives_the_difference_in_published_standard_errors():
    data = _table(spread="sd_pop", n_runs=3, rows=[{"strategy": "spft", "value": 0.80, "spread": 0.02}])
    tables = data["studies"]["s"]["tables"]
    tables.append({"source": "Table 2", "dataset": "d", "arch": "a", "metric": "auroc", "statistic": "single",
                   "rows": [{"strategy": "spft", "value": 0.85}, {"strategy": "head", "value": 0.70}]})
    tables.append({"source": "Table 3", "dataset": "d", "arch": "a", "metric": "auroc", "statistic": "run",
                   "rows": [{"strategy": "spft", "run": r, "value": v} for r, v in ((1, 0.78), (2, 0.81), (3, 0.81))]
                   + [{"strategy": "other", "run": 1, "value": 0.5}]})
    tables.append({"source": "Table 4", "dataset": "d", "arch": "a", "metric": "map", "spread": "sd", "n_runs": 4,
                   "rows": [{"strategy": "spft", "value": 0.60, "spread": 0.04}]})
    tables.append({"source": "Table 5", "dataset": "d", "arch": "a", "metric": "kappa", "spread": "se",
                   "scale": 100, "rows": [{"strategy": "spft", "value": 60.0, "spread": 0.0}]})
    ref = parse_reference(data)
    ours = pd.DataFrame({"dataset": "d", "arch": "a", "strategy": ["spft", "head", "other", "spft", "spft"],
                         "metric": ["auroc", "auroc", "auroc", "map", "kappa"], "mean": [0.83, 0.75, 0.6, 0.62, 0.61]})
    side = side_by_side(ours, ref).set_index(["strategy", "metric"])
    spft = side.loc[("spft", "auroc")]
    # the mean (Table 1) is the counterpart, not the single number of Table 2 nor the runs of Table 3;
    # population SD 0.02 over 3 runs is a standard error of 0.02 / sqrt(2)
    assert spft["published"] == 0.80 and spft["published_statistic"] == "mean" and spft["status"] == MATCHED
    assert spft["published_se"] == pytest.approx(0.02 / math.sqrt(2))
    assert spft["difference_se"] == pytest.approx(0.03 / (0.02 / math.sqrt(2)))
    head = side.loc[("head", "auroc")]  # only a single number: compared with it, no SE
    assert head["published"] == 0.70 and head["published_statistic"] == "single" and math.isnan(head["difference_se"])
    assert side.loc[("other", "auroc"), "status"] != MATCHED  # a run alone is no counterpart
    sd = side.loc[("spft", "map")]  # sample SD 0.04 over 4 runs: SE 0.02
    assert sd["published_se"] == pytest.approx(0.02) and sd["difference_se"] == pytest.approx(1.0)
    zero = side.loc[("spft", "kappa")]  # an SE printed as 0.0: no ratio
    assert zero["published_se"] == 0 and math.isnan(zero["difference_se"])
    # what has no result of ours: one row per setting, runs left out
    assert published_only(ours.iloc[[2, 3, 4]], ref)[["strategy", "statistic"]].values.tolist() == \
        [["spft", "mean"], ["head", "single"]]


# -- the reports -------------------------------------------------------------------------------------------------
def _metrics_files(root: Path, datasets=("chexpert",), archs=("resnet50", "vgg19"), scores=None) -> list[str]:
    scores = scores or {"ft": 0.70, "lp": 0.75, "l1_sp": 0.7005}
    files = []
    for ds in datasets:
        for i, arch in enumerate(archs):
            for strategy, score in scores.items():
                for seed, off in enumerate((0.0, 0.02)):
                    value = score + 0.1 * i + off
                    path = root / "runs" / ds / arch / strategy / "lr0.001" / f"seed{seed}" / "metrics.json"
                    path.parent.mkdir(parents=True)
                    path.write_text(json.dumps({
                        "dataset": ds, "arch": arch, "strategy": strategy, "lr": 0.001, "seed": seed,
                        "primary_metric": "map", "val": {"map": 0.5, "auroc": 0.6},
                        "test": {"map": value, "auroc": value}, "per_class": {"val": {}, "test": {}}}))
                    files.append(str(path))
    return files


def test_the_published_report_writes_the_recounts(tmp_path):
    files = _metrics_files(tmp_path)
    written = build_published_report(files, load_reference(REFERENCE_FILE), tmp_path / "out")
    t11 = pd.read_csv(written["recount_table11.csv"])
    t12 = pd.read_csv(written["recount_table12.csv"])
    assert len(t11) == 8 and t11["agrees"].all() and len(t12) == 8
    assert {"resnet50_printed", "resnet50_recount", "effectiveness_pct_printed"} <= set(t12.columns)
    md = Path(written["side_by_side.md"]).read_text()
    assert "8 of 8 rows reproduced" in md and "rows differ from the printed table" in md
    assert "Δ / published SE" in md
    side = pd.read_csv(written["side_by_side.csv"], keep_default_na=False, na_values=[""])
    ft = side[(side["strategy"] == "ft") & (side["arch"] == "resnet50") & (side["metric"] == "map")].iloc[0]
    # ours 0.71 against Table 3's 71.98 ± 0.7 (SE)
    assert ft["published"] == pytest.approx(0.7198) and ft["published_se"] == pytest.approx(0.007)
    assert ft["difference_se"] == pytest.approx((0.71 - 0.7198) / 0.007)
    # a reference without summary tables: empty recounts, said so
    empty = build_published_report(files, parse_reference(_table(rows=[{"strategy": "ft", "value": 0.5}])),
                                   tmp_path / "out2")
    assert pd.read_csv(empty["recount_table11.csv"]).empty and pd.read_csv(empty["recount_table12.csv"]).empty
    assert "nothing to recount" in Path(empty["side_by_side.md"]).read_text()


def test_the_classification_report_writes_tables_11_and_12(tmp_path):
    from medtl.report.classification import build_report

    files = _metrics_files(tmp_path, datasets=("chexpert", "bach"))
    written = build_report(files, str(tmp_path / "out"), reference="ft", threshold=0.001,
                           strategy_order=["ft", "lp", "l1_sp"], arch_order=["resnet50", "vgg19"])
    t11 = pd.read_csv(written["table11.csv"]).set_index("dataset")
    # per dataset the best of all: vgg19/lp (0.85 + 0.01 over seeds), against vgg19's ft (0.80 + 0.01)
    assert (t11.loc["chexpert", "arch"], t11.loc["chexpert", "strategy"]) == ("vgg19", "lp")
    assert t11.loc["chexpert", "gain_pct"] == pytest.approx(100 * 0.05 / 0.81)
    t12 = pd.read_csv(written["table12.csv"]).set_index("strategy")
    # lp beats ft on both datasets and architectures; l1_sp by 0.0005 / 0.71 = 0.07% < 0.1% nowhere
    assert t12.loc["lp", ["resnet50", "vgg19", "total"]].tolist() == [2, 2, 4]
    assert t12.loc["l1_sp", "total"] == 0 and t12.loc["lp", "effectiveness_pct"] == pytest.approx(100.0)
    report = Path(written["report.md"]).read_text()
    assert "## Table 11" in report and "## Table 12" in report
    assert (tmp_path / "out" / "best_method.csv").is_file() and (tmp_path / "out" / "effectiveness.csv").is_file()


def test_the_spft_report_finds_the_second_papers_numbers(tmp_path):
    import yaml

    from medtl.report.spft import build_spft_report
    from medtl.strategies import STRATEGIES

    config = yaml.safe_load((REFERENCE_FILE.parents[1] / "configs" / "spft.yaml").read_text())
    defaults = STRATEGIES.get("spft").defaults
    settings = {name: {**defaults, **{k: v for k, v in entry.items() if k != "type"}}
                for name, entry in config["strategies"].items()}
    classes = {"chestxray14": ["atelectasis", "effusion"], "ham10000": ["mel", "nv"]}
    files = []
    for ds, names in classes.items():
        for strategy in settings:
            for seed, off in enumerate((0.0, 0.01, 0.02)):
                per = {c: {"auroc": 0.8 + off + 0.01 * i, "support": 5} for i, c in enumerate(names)}
                path = tmp_path / "runs" / ds / "rad_dino" / strategy / "lr5e-05" / f"seed{seed}" / "metrics.json"
                path.parent.mkdir(parents=True)
                path.write_text(json.dumps({
                    "dataset": ds, "arch": "rad_dino", "strategy": strategy, "lr": 5e-05, "seed": seed,
                    "primary_metric": "auroc", "val": {"auroc": 0.8}, "test": {"auroc": 0.805 + off},
                    "per_class": {"val": per, "test": per}}))
                files.append(str(path))
    out = tmp_path / "report"
    build_spft_report(files, str(out), settings, load_reference(REFERENCE_FILE),
                      strategy_order=list(settings), arch_order=["rad_dino"], families={"rad_dino": "vit"})
    side = pd.read_csv(out / "side_by_side.csv")
    side = side.assign(**{"class": side["class"].fillna("")}).set_index(["dataset", "strategy", "class"])
    # macro AUROC of full SPFT on ChestX-ray14: Table V's mean (not Table VI's / X's single 0.8331), SD over 3 runs
    full = side.loc[("chestxray14", "spft", "")]
    assert (full["published"], full["published_statistic"]) == (pytest.approx(0.8314), "mean")
    assert full["published_se"] == pytest.approx(0.0015 / math.sqrt(3))
    # the ablation and all-layers rows have only Table X's / VI's single numbers
    assert side.loc[("chestxray14", "spft_head_only", ""), "published"] == pytest.approx(0.8095)
    assert side.loc[("chestxray14", "spft_all_layers", "effusion"), "published"] == pytest.approx(0.8302)
    # HAM10000's population SD over 3 runs as a standard error
    mel = side.loc[("ham10000", "spft", "mel")]
    assert mel["published"] == pytest.approx(0.8834) and mel["published_se"] == pytest.approx(0.0209 / math.sqrt(2))
    assert side.loc[("ham10000", "spft_progressive", "mel"), "status"] != MATCHED
    ablation = (out / "ablation.md").read_text()
    assert "| spft_head_only " in ablation and "chestxray14: 0.809 (Δ +0.006)" in ablation  # Table X
    assert "chestxray14: 0.831 (Δ -0.016); ham10000: 0.932 (Δ -0.117)" in ablation  # full: Tables V and II
