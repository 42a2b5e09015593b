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


# -- benchmarks/gpu_acceptance.py: the GPU path end to end, here at smoke size on the CPU -------------------
SHARED_DATA = REPO.parent / "shared" / "data"


def acceptance(*args: str, timeout: float):
    import subprocess

    return subprocess.run([sys.executable, str(BENCH / "gpu_acceptance.py"), "--device", "cpu",
                           "--data", str(SHARED_DATA), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def table_rows(out: str) -> dict[str, dict]:
    """stage -> its row of the printed table."""
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["stage", "what", "jobs", "status", "wall s", "key metric"]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]
    return {row["stage"]: row for row in rows}


def need_shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")


@pytest.mark.slow
@pytest.mark.realdata
def test_gpu_acceptance_smoke_run(tmp_path):
    """Every stage of the acceptance run at smoke size: one table, every stage ok, every planned job's
    metrics.json and every report there (the script checks them), a key metric per stage."""
    need_shared_data()
    import yaml

    proc = acceptance("--smoke", "--out", str(tmp_path), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = table_rows(proc.stdout)
    stages = list(yaml.safe_load((REPO / "configs" / "gpu_acceptance_smoke.yaml").read_text())["stages"])
    assert list(rows) == stages
    assert {row["status"] for row in rows.values()} == {"ok"}, rows
    assert all(row["key metric"] for row in rows.values()), rows
    assert "test AUROC" in rows["classification"]["key metric"]
    assert "mAP50" in rows["detection"]["key metric"] and "Dice" in rows["segmentation"]["key metric"]
    assert "img/s" in rows["throughput"]["key metric"]
    assert "device: CPU (smoke)" in proc.stdout and "commit " in proc.stdout
    assert (tmp_path / "table.md").read_text().strip() in proc.stdout
    for stage in stages[:-1]:  # the Snakemake stages' reports
        assert list((tmp_path / stage / "results" / "report").glob("*/*.md")), stage


@pytest.mark.realdata
def test_gpu_acceptance_names_the_stage_that_fails(tmp_path):
    """A stage whose config is invalid: the run goes on with the others, exits 1, and the table and the
    lines below it name the stage and the error."""
    need_shared_data()
    import yaml

    config = yaml.safe_load((REPO / "configs" / "gpu_acceptance_smoke.yaml").read_text())
    config["stages"]["segmentation"]["config"]["segmentation"]["models"]["sam_tiny"]["encoder"] = "vit_nonexistent"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(config))
    proc = acceptance("--config", str(tmp_path / "broken.yaml"), "--stages", "segmentation,throughput",
                      "--out", str(tmp_path / "out"), timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert rows["segmentation"]["status"] == "FAILED (exit 1)"
    assert rows["throughput"]["status"] == "ok"
    assert "FAILED: segmentation\n" in proc.stdout
    assert "unknown SAM encoder 'vit_nonexistent'" in proc.stdout


def test_gpu_acceptance_gpu_config_plans(tmp_path):
    """The GPU run's stages (real sizes, planned here, not run): every config passes the checks and plans
    every strategy x the four architectures, RAD-DINO's SPFT, both detectors and both SAMs, FT and SPFT."""
    proc = acceptance("--config", str(REPO / "configs" / "gpu_acceptance.yaml"), "--dry-run",
                      "--out", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert {row["status"] for row in rows.values()} == {"ok"}
    assert "train 60" in rows["classification"]["key metric"]  # 15 strategies x 4 architectures
    assert "train 1," in rows["classification_compile"]["key metric"]
    assert "train 1," in rows["spft_rad_dino"]["key metric"] and "report_spft 1" in rows["spft_rad_dino"]["key metric"]
    assert "train_detection 4" in rows["detection"]["key metric"]
    assert "train_segmentation 4" in rows["segmentation"]["key metric"]


@pytest.mark.parametrize("name", ["gpu_acceptance.yaml", "gpu_acceptance_smoke.yaml"])
def test_gpu_acceptance_runs_every_registered_strategy(name):
    """A strategy added to the registry is added to the acceptance run's classification too."""
    import yaml

    from medtl.strategies import STRATEGIES

    config = yaml.safe_load((REPO / "configs" / name).read_text())["stages"]["classification"]["config"]
    types = {settings.get("type", key) for key, settings in config["strategies"].items()}
    assert types == set(STRATEGIES), set(STRATEGIES) ^ types
    if name == "gpu_acceptance.yaml":  # every strategy on every architecture
        assert not any("strategies" in arch for arch in config["architectures"].values())
