"""One verdict across datasets (medtl.report.verdict): Friedman and Nemenyi (scipy, scikit-posthocs), the Bayesian
signed-rank test against FT (baycomp), the modality table, and every file the report rule lists."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.report import verdict

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"cxr_a": "chest X-ray", "cxr_b": "chest X-ray", "derm_a": "dermoscopy", "derm_b": "dermoscopy"}
ARCHS = ["arch_x", "arch_y"]  # 4 datasets x 2 architectures = 8 cells


def selected_table(scores) -> pd.DataFrame:
    """selected.csv's columns the verdict reads: one row per (dataset, arch, strategy), primary metric auroc."""
    rows = [{"dataset": d, "arch": a, "strategy": s, "primary_metric": "auroc", "test_auroc_mean": v}
            for (d, a), per in scores.items() for s, v in per.items()]
    return pd.DataFrame(rows)


def synthetic(seed=0):
    """8 cells: 'best' beats FT by 0.1 everywhere, 'same' equals FT within 0.001, 'lp' is 0.05 worse; 'spft'
    only has dermoscopy cells."""
    rng = np.random.default_rng(seed)
    scores = {}
    for d in DATASETS:
        for a in ARCHS:
            ft = 0.7 + rng.uniform(-0.05, 0.05)
            per = {"ft": ft, "best": ft + 0.1, "same": ft + rng.uniform(-0.001, 0.001), "lp": ft - 0.05}
            if d.startswith("derm"):
                per["spft"] = ft + 0.02
            scores[(d, a)] = per
    return selected_table(scores)


STRATEGIES = ["ft", "best", "same", "lp", "spft"]


def test_friedman_finds_the_best_strategy():
    scores = verdict.score_matrix(synthetic(), "ft", STRATEGIES)
    assert scores.matrix.shape == (8, 4)  # spft is not in every cell
    assert any("spft (4 of 8 cells)" in n for n in scores.notes)
    table, pv, note = verdict.friedman_table(scores.matrix, alpha=0.05)
    assert note == "" and pv is not None
    assert table["friedman_p"].iloc[0] < 0.001
    assert table["strategy"].iloc[0] == "best" and table["average_rank"].iloc[0] == 1.0
    assert table.set_index("strategy").loc["lp", "average_rank"] == 4.0
    assert not table.set_index("strategy").loc["lp", "not_worse_than_best"]


def test_bayesian_signed_rank_against_ft():
    m = verdict.score_matrix(synthetic(), "ft", STRATEGIES).matrix
    table, note = verdict.bayes_table(m, "ft", rope=0.01)
    t = table.set_index("strategy")
    assert note == ""
    assert t.loc["best", "p_strategy_better"] > 0.9 and t.loc["best", "verdict"] == "better"
    assert t.loc["same", "p_equivalent"] > 0.9 and t.loc["same", "verdict"] == "equivalent"
    assert t.loc["lp", "p_reference_better"] > 0.9
    for _, r in t.iterrows():
        assert r["p_strategy_better"] + r["p_equivalent"] + r["p_reference_better"] == pytest.approx(1)


def test_modality_table():
    m = verdict.score_matrix(synthetic(), "ft", STRATEGIES).matrix
    table = verdict.modality_table(m, DATASETS, alpha=0.05).set_index("modality")
    assert list(table.index) == ["chest X-ray", "dermoscopy"] and list(table["n_cells"]) == [4, 4]
    for mod in table.index:
        assert table.loc[mod, "best_strategy"] == "best"
        # 4 cells: Nemenyi separates best from lp (ranks 1 vs 4) but not from ft / same
        assert set(table.loc[mod, "not_worse"].split(", ")) == {"best", "ft", "same"}
        assert "Nemenyi" in table.loc[mod, "test"]
    few = verdict.modality_table(m.iloc[:6], DATASETS, alpha=0.05).set_index("modality")  # dermoscopy: 2 cells
    assert few.loc["dermoscopy", "note"].startswith("too few cells") and few.loc["dermoscopy", "not_worse"] == ""


def test_modality_from_config_then_type():
    assert verdict.modality_of("x", {"x": "chexpert"}) == "chest X-ray"
    assert verdict.modality_of("x", {"x": "chexpert"}, {"x": "CXR (site 2)"}) == "CXR (site 2)"
    assert verdict.modality_of("synth_derm") == "synthetic RGB (dermoscopy-like)"


def rule_verdict_outputs() -> set[str]:
    """The verdict's files among the classification report rule's outputs (medtl.report.outputs), relative to its
    folder."""
    from medtl.report.outputs import STUDIES

    names = {rel for o in STUDIES["classification"].outputs for rel in o.files([])
             if Path(rel).name.startswith(("verdict", "critical"))}
    return {n for n in names if not n.endswith(".html")}  # the pages are rendered from the .md by the script


@pytest.mark.parametrize("n_cells", [8, 1, 0])
def test_writer_writes_every_file_the_rule_lists(tmp_path, n_cells):
    sel = synthetic()
    cells = sorted(set(zip(sel["dataset"], sel["arch"])))[:n_cells]
    sel = sel[[c in cells for c in zip(sel["dataset"], sel["arch"])]]
    written = verdict.write_verdict(sel, tmp_path, "ft", STRATEGIES, {"modality": DATASETS})
    listed = rule_verdict_outputs()
    assert listed == set(verdict.FILES) and set(written) == listed
    for name in listed:
        assert (tmp_path / name).stat().st_size > 0
    if n_cells < 2:
        for name in ("verdict_friedman.md", "verdict_bayes.md"):
            assert "not enough cells" in (tmp_path / name).read_text()
    for name in listed:  # no table of headers only (the HTML page would show it as an empty row)
        if name.endswith(".md"):
            lines = (tmp_path / name).read_text().splitlines()
            for i, line in enumerate(lines[:-1]):
                if re.fullmatch(r"\|(---\|)+", lines[i + 1]):
                    assert i + 2 < len(lines) and lines[i + 2].startswith("|"), (name, line)
    for name in ("verdict_friedman", "verdict_bayes", "verdict_modality", "critical_difference"):
        assert (REPO / "report" / "classification" / f"{name}.rst").is_file()
