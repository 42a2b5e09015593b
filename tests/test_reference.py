"""The reference file of published numbers, its validation, and the side-by-side machinery."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtl.report.published import (MATCHED, UNMATCHED, ReferenceError, build_published_report, load_reference,
                                    parse_reference, published_only, side_by_side)

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "references" / "published.yaml"

# Numbers typed from the papers' tables, checked against the reference file:
# The spot check of typed numbers against a second, independent typing from the papers is
# tests/test_published_spotcheck.py (tests/published_spotcheck.yaml).


def test_the_reference_file_is_valid_and_says_where_everything_comes_from():
    ref = load_reference(REFERENCE_FILE)
    assert set(ref.studies) == {"davila2024", "spft_rad_dino", "medmnist_v2"}
    assert "2406.10050" in ref.studies["davila2024"]["source"]
    for sid, study in ref.studies.items():
        rows = ref.rows[ref.rows["study"] == sid]
        if study.get("obtained"):
            assert len(rows), f"{sid} is marked obtained but has no rows"
        else:
            assert study["note"].strip(), f"{sid}: what is missing must be written down"
        # every row names its table (the segmentation Dice of the second paper: its section)
        assert rows["source"].str.contains("Table|Section", case=False).all(), f"{sid}: every row names its table"
    # what could not be obtained is stated in the file (and so in every report)
    assert len(ref.missing()) == sum(not s.get("obtained") for s in ref.studies.values())


def _study(**table):
    return {"studies": {"s": {"citation": "c", "source": "arXiv:1", "obtained": True,
                              "tables": [{"source": "Table 1", "metric": "auroc", **table}]}}}


def test_values_are_read_as_printed_and_compared_as_fractions():
    ref = parse_reference(_study(scale=100, spread="sd", dataset="d", arch="a",
                                 rows=[{"strategy": "ft", "value": 85.2, "spread": 0.4},
                                       {"strategy": "lp", "value": 80, "class": "mel"}]))
    rows = ref.rows.set_index("strategy")
    assert rows.loc["ft", "value"] == pytest.approx(0.852) and rows.loc["ft", "spread"] == pytest.approx(0.004)
    assert rows.loc["ft", "spread_kind"] == "sd" and rows.loc["ft", "class"] == ""
    assert rows.loc["lp", "class"] == "mel" and math.isnan(rows.loc["lp", "spread"])
    assert rows.loc["ft", "source"] == "arXiv:1, Table 1"


@pytest.mark.parametrize("data, message", [
    ({"studies": {"s": {"citation": "c", "obtained": True}}}, "'source' is required"),
    ({"studies": {"s": {"citation": "c", "source": "x", "obtained": False}}}, "needs a 'note'"),
    (_study(dataset="d", arch="a", strategy="ft", rows=[{"value": 0.8}, {"value": 0.9}]), "already given"),
    (_study(dataset="d", arch="a", rows=[{"value": 0.8}]), "'strategy' is missing"),
    (_study(dataset="d", arch="a", strategy="ft", rows=[{"value": "0.8"}]), "expected a number"),
    (_study(dataset="d", arch="a", strategy="ft", rows=[{"value": 0.8, "spread": 0.1}]), "spread: none"),
    (_study(dataset="d", arch="a", strategy="ft", rows=[{"value": 0.8, "estimate": True}]), "unknown keys"),
    (_study(dataset="d", arch="a", strategy="FT (ours)", rows=[{"value": 0.8}]), "not a workflow name"),
    ({"studies": {"s": {"citation": "c", "source": "x", "obtained": True,
                        "tables": [{"metric": "auroc", "rows": [{"value": 1}]}]}}}, "'source' is required"),
])
def test_invalid_reference_entries_are_refused(data, message):
    with pytest.raises(ReferenceError, match=message):
        parse_reference(data)


def test_side_by_side_one_row_per_setting_and_the_difference():
    ref = parse_reference(_study(dataset="d", arch="a", rows=[
        {"strategy": "ft", "value": 0.80}, {"strategy": "lp", "value": 0.70},
        {"strategy": "lp_ft", "value": 0.9}]))
    ours = pd.DataFrame({"dataset": ["d", "d", "d", "d"], "arch": ["a", "a", "a", "b"],
                         "strategy": ["ft", "lp", "l2_sp", "ft"], "metric": ["auroc", "auroc", "auroc", "auroc"],
                         "mean": [0.83, 0.65, 0.7, 0.9], "sd": [0.01, 0.02, 0.0, 0.0]})
    side = side_by_side(ours, ref)
    assert len(side) == len(ours)
    assert list(side["status"]) == [MATCHED, MATCHED, UNMATCHED, UNMATCHED]
    assert side["difference"].iloc[0] == pytest.approx(0.03) and side["difference"].iloc[1] == pytest.approx(-0.05)
    assert side["difference"].iloc[2:].isna().all()
    assert list(published_only(ours, ref)["strategy"]) == ["lp_ft"]
    with pytest.raises(ValueError, match="twice"):
        side_by_side(pd.concat([ours, ours]), ref)


def test_published_report_over_classification_runs(tmp_path):
    files = []
    for strategy, score in (("ft", 0.8), ("lp", 0.7)):
        for seed, off in enumerate((0.0, 0.02)):
            path = tmp_path / "runs" / "chexpert" / "resnet50" / strategy / "lr0.001" / f"seed{seed}" / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({
                "dataset": "chexpert", "arch": "resnet50", "strategy": strategy, "lr": 0.001, "seed": seed,
                "primary_metric": "map", "val": {"map": 0.5, "auroc": 0.6}, "test": {"map": score + off,
                                                                               "auroc": score + 0.1 + off},
                "per_class": {"val": {}, "test": {}}}))
            files.append(str(path))
    reference = parse_reference(_study(dataset="chexpert", arch="resnet50", rows=[
        {"strategy": "ft", "value": 0.9}, {"strategy": "auto_rgn", "value": 0.5}]))
    written = build_published_report(files, reference, tmp_path / "out")
    side = pd.read_csv(written["side_by_side.csv"])
    assert len(side) == 4  # 2 strategies x 2 metrics
    matched = side[side["status"] == MATCHED]
    assert len(matched) == 1
    row = matched.iloc[0]
    assert (row["strategy"], row["metric"]) == ("ft", "auroc")
    assert row["mean"] == pytest.approx(0.91) and row["difference"] == pytest.approx(0.01)
    assert row["sd"] == pytest.approx(math.sqrt(2) * 0.01)
    md = Path(written["side_by_side.md"]).read_text()
    assert "1 of 4 setting(s)" in md and "chexpert/resnet50/auto_rgn/auroc" in md


def test_the_reference_file_parses_as_plain_yaml():
    data = yaml.safe_load(REFERENCE_FILE.read_text())
    assert all(isinstance(s.get("tables", []), list) for s in data["studies"].values())
