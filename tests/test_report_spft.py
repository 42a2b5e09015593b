"""The SPFT report on synthetic metrics files with known numbers, and its place in the workflow."""
from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest

from medtl.report.published import MATCHED, UNMATCHED, parse_reference
from medtl.report.spft import build_spft_report, effective, flag_label, roles
from medtl.strategies import STRATEGIES
from workflow_helpers import scheduled_jobs, write_config

DEFAULTS = STRATEGIES.get("spft").defaults
SETTINGS = {  # resolved settings, as the rule passes them; names deliberately unrelated to the roles
    "full": {**DEFAULTS, "top_k": 10},
    "a": {**DEFAULTS, "top_k": 0, "class_weights": False, "ema": False},                # head only
    "b": {**DEFAULTS, "top_k": 10, "class_weights": False, "ema": False},               # + progressive
    "c": {**DEFAULTS, "top_k": 10, "ema": False, "ema_decay": 0.5},                     # + class weights
    "every": {**DEFAULTS, "top_k": "all"},                                              # all layers
    "other_lr_ratio": {**DEFAULTS, "top_k": 10, "encoder_lr_ratio": 0.5},               # in no table
}
DATASETS = ["ds_cxr", "ds_derm"]
CLASSES = {"ds_cxr": ["effusion", "nodule"], "ds_derm": ["mel", "nv", "bkl"]}
SEEDS = [0, 1, 2]
LRS = [5e-5, 1e-4]
BASE = {"full": 0.80, "a": 0.70, "b": 0.74, "c": 0.77, "every": 0.79, "other_lr_ratio": 0.60}
NOISE = [0.0, 0.02, -0.01]


def good_lr(strategy):
    return 1e-4 if strategy == "b" else 5e-5


def class_score(ds, strategy, c, seed):
    return BASE[strategy] + 0.01 * CLASSES[ds].index(c) + NOISE[seed]


def write_runs(root, archs=("vit_a",), strategies=tuple(SETTINGS), seeds=SEEDS):
    files = []
    for ds in DATASETS:
        for arch in archs:
            for s in strategies:
                for lr in LRS:
                    for seed in seeds:
                        good = lr == good_lr(s)
                        per_test = {c: {"auroc": class_score(ds, s, c, seed) + (0 if good else 0.1), "ap": 0.5,
                                        "support": 10 + i} for i, c in enumerate(CLASSES[ds])}
                        per_val = {c: {"auroc": 0.9 if good else 0.8, "ap": 0.5, "support": 5} for c in CLASSES[ds]}
                        test_auc = statistics.fmean(v["auroc"] for v in per_test.values())
                        record = {"dataset": ds, "arch": arch, "strategy": s, "lr": lr, "seed": seed,
                                  "primary_metric": "auroc", "monitor": "auroc", "best_epoch": 2, "epochs_run": 4,
                                  "val": {"auroc": 0.9 if good else 0.8}, "test": {"auroc": test_auc},
                                  "per_class": {"val": per_val, "test": per_test}}
                        path = root / "runs" / ds / arch / s / f"lr{lr:g}" / f"seed{seed}" / "metrics.json"
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(json.dumps(record))
                        files.append(str(path))
    return files


REFERENCE = {"studies": {"paper": {
    "citation": "A test paper", "source": "arXiv:0000.00000v1", "obtained": True,
    "tables": [
        {"source": "Table 2", "metric": "auroc", "scale": 100, "spread": "sd",
         "rows": [{"dataset": "ds_cxr", "arch": "vit_a", "strategy": "full", "value": 81.0, "spread": 1.0},
                  {"dataset": "ds_cxr", "arch": "vit_a", "strategy": "a", "value": 69.5},
                  {"dataset": "ds_unrun", "arch": "vit_a", "strategy": "full", "value": 50.0}]},
        {"source": "Table 4", "dataset": "ds_derm", "arch": "vit_a", "strategy": "full", "metric": "auroc",
         "rows": [{"class": "mel", "value": 0.75}]},
    ]}}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("spft")
    files = write_runs(root)
    written = build_spft_report(files, str(root / "report"), SETTINGS, parse_reference(REFERENCE),
                                strategy_order=list(SETTINGS), arch_order=["vit_a"], families={"vit_a": "vit"})
    return root / "report", written


def test_roles_come_from_settings():
    r = roles(SETTINGS, list(SETTINGS))
    assert r["main"] == "full"
    assert r["ablation"] == ["a", "b", "c", "full"]           # the chain order, not the config order
    assert r["topk"] == ["full", "every"]
    assert [flag_label(SETTINGS[s]) for s in r["ablation"]] == \
        ["Head only", "+ progressive unfreezing", "+ class weights", "+ EMA (full SPFT)"]
    # settings without effect do not matter: head only ignores top_k, no-EMA ignores ema_decay
    assert "top_k" not in effective(SETTINGS["a"]) and "ema_decay" not in effective(SETTINGS["c"])
    assert roles(SETTINGS, ["a", "b"]) == {"main": None, "ablation": [], "topk": []}
    # progressive: false unfreezes the top_k at once (the meaning it has in every task): neither the ablation's
    # head only nor a top-k row; nor is it the main variant
    at_once = {**SETTINGS, "at_once": {**DEFAULTS, "top_k": 10, "progressive": False}}
    r = roles(at_once, ["at_once", *SETTINGS])
    assert r["main"] == "full" and "at_once" not in r["ablation"] + r["topk"]


def test_every_output_is_written(report):
    out, written = report
    expected = {"runs.csv", "ablation.csv", "ablation.md", "per_class.csv", "per_class.md", "topk.csv", "topk.md",
                "side_by_side.csv", "side_by_side.md", "figures/per_class_auc.png", "report.md"}
    assert set(written) == expected
    assert (out / "figures" / "per_class_auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pd.read_csv(out / "runs.csv")) == len(DATASETS) * len(SETTINGS) * len(LRS) * len(SEEDS)


def test_ablation_table_mean_and_sd_at_the_selected_lr(report):
    out, _ = report
    ab = pd.read_csv(out / "ablation.csv")
    assert list(ab.loc[ab["dataset"] == "ds_cxr", "strategy"]) == ["a", "b", "c", "full"]
    assert "other_lr_ratio" not in set(ab["strategy"])
    for r in ab.to_dict("records"):
        assert r["lr"] == good_lr(r["strategy"])  # chosen on validation, although the other is better on test
        classes = CLASSES[r["dataset"]]
        seeds = [statistics.fmean(class_score(r["dataset"], r["strategy"], c, s) for c in classes) for s in SEEDS]
        assert r["mean"] == pytest.approx(statistics.fmean(seeds))
        assert r["sd"] == pytest.approx(statistics.stdev(seeds))
    md = (out / "ablation.md").read_text()
    assert md.index("Head only") < md.index("+ progressive unfreezing") < md.index("+ class weights") < \
        md.index("+ EMA (full SPFT)")
    topk = pd.read_csv(out / "topk.csv")
    assert list(dict.fromkeys(topk["strategy"])) == ["full", "every"]
    assert "top-10 layers" in (out / "topk.md").read_text() and "all layers" in (out / "topk.md").read_text()


def test_per_class_auc_mean_and_sd_over_runs(report):
    out, _ = report
    pc = pd.read_csv(out / "per_class.csv")
    assert len(pc) == len(SETTINGS) * sum(len(c) for c in CLASSES.values())
    row = pc[(pc["dataset"] == "ds_derm") & (pc["strategy"] == "full") & (pc["class"] == "nv")].iloc[0]
    values = [class_score("ds_derm", "full", "nv", s) for s in SEEDS]
    assert row["mean"] == pytest.approx(statistics.fmean(values))
    assert row["sd"] == pytest.approx(statistics.stdev(values))
    assert row["support"] == 11 and row["n_seeds"] == 3
    md = (out / "per_class.md").read_text()
    assert "### ds_derm / vit_a (full)" in md and "**macro AUROC**" in md


def test_side_by_side_has_one_row_per_matched_setting(report):
    out, _ = report
    side = pd.read_csv(out / "side_by_side.csv", keep_default_na=False, na_values=[""])
    matched = side[side["status"] == MATCHED]
    # three reference rows match a result (ds_unrun has no run): macro AUC of full and of head only, mel
    assert len(matched) == 3
    assert not side.duplicated(["dataset", "arch", "strategy", "metric", "class"]).any()
    assert set(side.loc[side["status"] != MATCHED, "status"]) == {UNMATCHED}
    full = matched[(matched["strategy"] == "full") & matched["class"].isna()].iloc[0]
    assert full["published"] == pytest.approx(0.81) and full["published_spread"] == pytest.approx(0.01)
    assert full["difference"] == pytest.approx(full["mean"] - 0.81)
    mel = matched[matched["class"] == "mel"].iloc[0]
    assert mel["dataset"] == "ds_derm" and mel["published"] == pytest.approx(0.75)
    md = (out / "side_by_side.md").read_text()
    assert md.count("arXiv:0000.00000v1") == 3 and "(3 of" in md
    # tables say where there is no published counterpart
    assert UNMATCHED in (out / "ablation.md").read_text()
    assert "ds_cxr: 0.810" in (out / "ablation.md").read_text()


def test_a_single_seed_has_no_sd(tmp_path):
    files = write_runs(tmp_path, strategies=("full",), seeds=[0])
    build_spft_report(files, str(tmp_path / "r"), SETTINGS, parse_reference({"studies": {}}))
    ab = pd.read_csv(tmp_path / "r" / "ablation.csv")
    assert ab["sd"].isna().all() and "± n/a" in (tmp_path / "r" / "ablation.md").read_text()


def test_runs_of_unknown_variants_are_refused(tmp_path):
    files = write_runs(tmp_path, strategies=("full",), seeds=[0])
    with pytest.raises(ValueError, match="without settings"):
        build_spft_report(files, str(tmp_path / "r"), {"a": SETTINGS["a"]}, parse_reference({"studies": {}}))


# -- the workflow: report_spft runs only with SPFT strategies, on their jobs only -----------------------------
def _config(strategies):
    return {"seeds": [0], "learning_rates": [0.001], "datasets": {"synth_cxr": {}},
            "architectures": {"vit_tiny": {"weights": {"type": "none"}}}, "strategies": strategies,
            "report": {"reference": next(iter(strategies))}}


@pytest.mark.slow
def test_report_spft_is_scheduled_only_with_spft_strategies(tmp_path):
    cfg = write_config(tmp_path / "with.yaml", _config({"ft": {}, "spft": {"top_k": 2},
                                                         "spft_head_only": {"type": "spft", "top_k": 0}}))
    jobs = scheduled_jobs(tmp_path, cfg)
    rules = [r for r, _ in jobs]
    assert rules.count("report_spft") == 1 and rules.count("report_published") == 1
    assert rules.count("train") == 3
    cfg = write_config(tmp_path / "without.yaml", _config({"ft": {}, "lp": {}}))
    assert "report_spft" not in [r for r, _ in scheduled_jobs(tmp_path, cfg)]
