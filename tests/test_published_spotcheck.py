"""An independent second typing of published numbers (tests/published_spotcheck.yaml) against the
reference file (references/published.yaml), to catch typos in either.

Every spot-check entry is one number as printed in the paper. A per-setting entry (davila2024 Tables 3-10,
the SPFT paper's Tables I, II, IV, V, VI, X) must match exactly one reference row of the same study,
dataset, arch, strategy, metric, class and statistic (and run), whose value or spread equals printed / scale.
A Table 11 entry (best method per dataset) must match the reference's ``best`` row of that dataset and its
``main_metrics``; a Table 12 entry (effectiveness counts) its ``effectiveness`` table.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from medtl.report.published import load_reference

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent / "references" / "published.yaml"
SPOTCHECK = HERE / "published_spotcheck.yaml"
TOL = 5e-7          # on fractions: the printed numbers have at most 4 decimals of a fraction
ROW_KINDS = ("value", "spread")
SUMMARY_KINDS = ("gain", "count", "total", "effectiveness", "threshold")


def _entries() -> list[dict]:
    entries = yaml.safe_load(SPOTCHECK.read_text())["entries"]
    for e in entries:
        for key in ("dataset", "arch", "strategy", "metric", "class"):
            e[key] = e.get(key) or ""
        stat = e.get("statistic", "mean")
        e["statistics"] = [stat] if isinstance(stat, str) else list(stat)
    return entries


def _id(e: dict) -> str:
    parts = [e["study"], e["table"].replace("Table ", "T"), e["dataset"], e["arch"], e["strategy"], e["metric"],
             e["class"], f"run{e['run']}" if e.get("run") else "", e["what"]]
    return "-".join(str(p) for p in parts if p)


ENTRIES = _entries()
ROW_ENTRIES = [e for e in ENTRIES if e["what"] in ROW_KINDS]
T11_ENTRIES = [e for e in ENTRIES if e["table"] == "Table 11"]
T12_ENTRIES = [e for e in ENTRIES if e["table"] == "Table 12"]


def _where(e: dict) -> str:
    return f"{e['table']}: {e['where']!r}, printed {e['printed']}"


@pytest.fixture(scope="module")
def reference():
    return load_reference(REFERENCE)


def test_spotcheck_file_is_well_formed():
    ids = [_id(e) for e in ENTRIES]
    assert len(ids) == len(set(ids)), "two spot-check entries name the same number"
    assert len(ENTRIES) >= 30
    for e in ENTRIES:
        assert e["study"] in ("davila2024", "spft_rad_dino"), e
        assert e["what"] in ROW_KINDS + SUMMARY_KINDS, e
        assert isinstance(e["printed"], (int, float)) and e["scale"] in (1, 100), e
        assert e.get("where"), e
        assert set(e["statistics"]) <= {"mean", "single", "run", "best_run"}, e
        assert (e["statistics"] == ["run"]) == isinstance(e.get("run"), int), e
        if e["what"] == "spread":
            assert e.get("kind") in ("se", "sd", "sd_pop") and e["statistics"] == ["mean"], e
        if e["what"] not in ROW_KINDS:
            assert e["table"] in ("Table 11", "Table 12") and e["scale"] == 1, e
    for t in [f"Table {i}" for i in range(3, 11)]:
        assert sum(e["table"] == t for e in ROW_ENTRIES) >= 3, t


@pytest.mark.parametrize("entry", ROW_ENTRIES, ids=[_id(e) for e in ROW_ENTRIES])
def test_published_number_matches_spotcheck(reference, entry):
    rows = reference.rows
    match = rows[(rows["study"] == entry["study"])
                 & (rows["dataset"] == entry["dataset"]) & (rows["arch"] == entry["arch"])
                 & (rows["strategy"] == entry["strategy"]) & (rows["metric"] == entry["metric"])
                 & (rows["class"] == entry["class"]) & rows["statistic"].isin(entry["statistics"])]
    if entry.get("run"):
        match = match[match["run"] == entry["run"]]
    assert len(match) == 1, (f"{len(match)} reference row(s) with statistic {entry['statistics']} for "
                             f"{_id(entry)} ({_where(entry)}); expected exactly one")
    row = match.iloc[0]
    expected = entry["printed"] / entry["scale"]
    got = row[entry["what"]]
    assert math.isfinite(got) and abs(got - expected) < TOL, (
        f"{_id(entry)}: reference {entry['what']} {got * entry['scale']:g} (as printed), spot-check "
        f"{entry['printed']} ({_where(entry)}); reference source {row['source']!r}")
    if entry["what"] == "spread":
        assert row["spread_kind"] == entry["kind"], (
            f"{_id(entry)}: reference spread kind {row['spread_kind']!r}, spot-check {entry['kind']!r} ({_where(entry)})")


@pytest.mark.parametrize("entry", T11_ENTRIES, ids=[_id(e) for e in T11_ENTRIES])
def test_table11_matches_spotcheck(reference, entry):
    best = reference.best
    match = best[(best["study"] == entry["study"]) & (best["dataset"] == entry["dataset"])]
    assert len(match) == 1, f"{len(match)} best_per_dataset row(s) for {entry['dataset']} ({_where(entry)})"
    row = match.iloc[0]
    assert (row["arch"], row["strategy"]) == (entry["arch"], entry["strategy"]), (
        f"{entry['dataset']}: reference best {row['arch']}/{row['strategy']}, spot-check "
        f"{entry['arch']}/{entry['strategy']} ({_where(entry)})")
    assert abs(row["gain_pct"] - entry["printed"]) < 1e-9, (
        f"{entry['dataset']}: reference gain {row['gain_pct']}%, spot-check {entry['printed']}% ({_where(entry)})")
    assert row["reference"] == "ft", "Table 11's gains are over conventional Full fine-tuning (FT)"
    main = reference.main_metrics.get(entry["study"], {})
    assert main.get(entry["dataset"]) == entry["metric"], (
        f"{entry['dataset']}: reference main metric {main.get(entry['dataset'])!r}, spot-check {entry['metric']!r} "
        "(footnote a: the main metric; Figs. 6-11 name it per dataset)")


@pytest.mark.parametrize("entry", T12_ENTRIES, ids=[_id(e) for e in T12_ENTRIES])
def test_table12_matches_spotcheck(reference, entry):
    eff = reference.effectiveness.get(entry["study"])
    assert eff is not None, f"no effectiveness table for {entry['study']} ({_where(entry)})"
    what = entry["what"]
    if what == "threshold":
        assert abs(eff["threshold_pct"] - entry["printed"]) < 1e-9 and eff["reference"] == "ft", (
            f"reference threshold {eff['threshold_pct']}% over {eff['reference']!r}, spot-check "
            f"{entry['printed']}% over 'ft' ({_where(entry)})")
        return
    if what == "total" and not entry["strategy"]:        # the printed Total row: one count per architecture
        got = eff["totals"].get(entry["arch"])
    else:
        rows = eff["rows"]
        match = rows[rows["strategy"] == entry["strategy"]]
        assert len(match) == 1, f"{len(match)} effectiveness row(s) for {entry['strategy']} ({_where(entry)})"
        column = {"count": entry["arch"], "total": "total", "effectiveness": "effectiveness_pct"}[what]
        got = match.iloc[0][column]
    assert got is not None and abs(got - entry["printed"]) < 1e-9, (
        f"{_id(entry)}: reference {got}, spot-check {entry['printed']} ({_where(entry)})")
