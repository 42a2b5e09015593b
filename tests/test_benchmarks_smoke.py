"""Each benchmark script runs (``--quick``) and prints its ratios; no timing is asserted.

They run in this process (the scripts' ``main(argv)``), so torch is imported once; the DAG planning
benchmark starts Snakemake on the embedded default config.
"""
from __future__ import annotations

import importlib
import sys

import pytest

from workflow_helpers import REPO

BENCH = REPO / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    yield lambda name: importlib.import_module(name)
    sys.path.remove(str(BENCH))


def test_data_loading(bench, capsys):
    results = bench("data_loading").main(["--quick"])
    out = capsys.readouterr().out
    assert "RATIO pipeline, host path" in out and "RATIO pipeline, + normalisation" in out
    assert results[("jpg", "maxdiff")] < 1e-5  # the store gives the tensors decoding would


def test_feature_cache(bench, capsys):
    results = bench("feature_cache").main(["--quick"])
    out = capsys.readouterr().out
    assert "RATIO job" in out and "RATIO worst case" in out
    assert results["same_epoch"] and results["maxdiff"] <= 1e-4


def test_trainer_overhead(bench, capsys):
    results = bench("trainer_overhead").main(["--quick"])
    out = capsys.readouterr().out
    assert "RATIO train epoch" in out and "RATIO full loop" in out
    assert results["resnet_tiny"]["same"] == 0.0  # the Trainer and the bare loop computed the same


def test_gpu_throughput(bench, capsys):
    bench("gpu_throughput").main(["--quick"])
    out = capsys.readouterr().out
    assert "images/s" in out
    import torch

    if not torch.cuda.is_available():
        assert "GPU not available" in out


def test_gpu_peak_table(bench):
    peak = bench("gpu_throughput").peak_flops
    assert peak("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak("Some Future GPU") is None


def test_dag_planning(bench, capsys):
    results = bench("dag_planning").main(["--quick"])
    out = capsys.readouterr().out
    assert "embedded default" in out and results["default"]["jobs"]["total"] > 0


def test_auto_rgn_rates(bench, capsys):
    results = bench("auto_rgn_rates").main(["--quick"])
    out = capsys.readouterr().out
    assert "RATIO smallest median backbone rate" in out
    assert min(r["median"] for r in results.values()) >= 0.01  # the new head does not set the scale
    assert all(r["moved"] == 1.0 for r in results.values())
