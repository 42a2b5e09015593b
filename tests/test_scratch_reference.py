"""The scratch reference (issue 18, item 2): strategy ``scratch`` trains as FT from the architecture's random
initialisation whatever its ``weights``, so every study also answers "does transfer help here?".

- The job grid: a scratch job has no weights file among its inputs (nor waits for pretraining), its cache key
  holds no weights entry (editing the weights reruns FT, not scratch), and the network the job starts from is
  the seeded random one: its first layer differs from the pretrained file's and equals a fresh build's.
- The report: scratch is a row beside FT in every per-dataset table, its paired test against FT is a Holm family
  of its own (the strategies' adjusted p-values do not change) shown as "does transfer help?", and the first
  paper's Table 11 and 12 (and the best method and effectiveness tables) leave it out, as the paper has no such row.
"""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from medtl import metrics as M
from medtl.report import significance as S
from medtl.report.classification import build_report
from medtl.training.predictions import FILE
from workflow_helpers import REPO, scheduled_jobs, snakemake, tiny_config, write_config


# -- the job grid -----------------------------------------------------------------------------------------------------
def pretrained_config() -> dict:
    """One dataset, one architecture pretrained (one epoch) on the synthetic source, FT and scratch, one epoch."""
    config = tiny_config({"ft": {}, "scratch": {}})
    config["source_datasets"] = {"synth_source": {"options": {"n": 200, "size": 36}}}
    config["architectures"] = {"resnet_tiny": {"weights": {"type": "pretrain", "dataset": "synth_source",
                                                           "epochs": 1}}}
    # 33 training images: batches of 12 leave no batch of one image, which BatchNorm cannot train on
    config["training"] = {**config["training"], "batch_size": 12}
    return config


WEIGHTS = "results/weights/resnet_tiny/pretrain-synth_source.pt"


def run_dir(strategy: str) -> str:
    return f"results/runs/synth_derm/resnet_tiny/{strategy}/lr0.001/seed0"


def train_inputs(workdir, configfile, strategy: str) -> list[str]:
    """The inputs Snakemake gives the training job of ``strategy`` (rules/common.smk's train_inputs), from a dry run
    that forces it."""
    proc = snakemake(workdir, configfile, "-n", "--forcerun", "train", f"{run_dir(strategy)}/metrics.json")
    text = proc.stdout + proc.stderr
    blocks = re.findall(r"^rule train:\n((?:    .*\n)+)", text, flags=re.M)
    block = next(b for b in blocks if f"strategy={strategy}," in b)
    return re.search(r"^    input: (.*)$", block, flags=re.M).group(1).split(", ")


def test_the_demo_config_plans_scratch_jobs_and_the_report(tmp_path):
    """The embedded default: one scratch job per (dataset, CNN) pair x seed, at its one learning rate, and the report."""
    jobs = scheduled_jobs(tmp_path, REPO / "config.yaml")
    scratch = [wc for rule, wc in jobs if rule == "train" and "strategy=scratch," in wc]
    assert len(scratch) == 2 * 2 and all("lr=0.003" in wc for wc in scratch)
    assert not any("arch=vit_tiny" in wc for wc in scratch)
    assert "report_classification" in {rule for rule, _ in jobs}


def test_a_scratch_job_needs_no_weights(tmp_path):
    """Planning alone: the scratch job waits for no pretraining and reads no weights file; FT does both."""
    cfg = write_config(tmp_path / "config.yaml", pretrained_config())
    assert "pretrain" not in {r for r, _ in scheduled_jobs(tmp_path, cfg, f"{run_dir('scratch')}/metrics.json")}
    assert "pretrain" in {r for r, _ in scheduled_jobs(tmp_path, cfg, f"{run_dir('ft')}/metrics.json")}
    assert WEIGHTS not in train_inputs(tmp_path, cfg, "scratch")
    assert WEIGHTS in train_inputs(tmp_path, cfg, "ft")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scratch")
    cfg = write_config(workdir / "config.yaml", pretrained_config())
    snakemake(workdir, cfg)
    return workdir, cfg


def starting_network(workdir, configfile, strategy: str):
    """The network a finished job started from: medtl.training.job.build (what the job runs first) on the job's
    own hyperparameters (its hparams.json, from the rule's params) and the weights file the rule gives it."""
    from medtl.data.store import load_store
    from medtl.training.job import build

    hp = json.loads((workdir / run_dir(strategy) / "hparams.json").read_text())
    inputs = train_inputs(workdir, configfile, strategy)
    weights = [workdir / f for f in inputs if f.endswith(".pt")]
    store = load_store(str(workdir / "results/prepared/synth_derm/r36_c32"))
    net, *_ = build(hp, store, str(weights[0]) if weights else None, torch.device("cpu"))
    return hp, net, store


@pytest.mark.slow
def test_a_scratch_job_starts_from_the_random_initialisation(finished_run):
    from medtl.models import build_network
    from medtl.runtime import seed_everything

    workdir, cfg = finished_run
    pretrained = torch.load(workdir / WEIGHTS, map_location="cpu", weights_only=True)
    first = next(iter(pretrained))  # the first layer of the backbone
    hp, net, store = starting_network(workdir, cfg, "scratch")
    assert hp["arch"]["weights"] == {"type": "none"} and hp["strategy"]["type"] == "scratch"
    start = net.net.state_dict()[first]
    assert not torch.equal(start, pretrained[first])
    seed_everything(int(hp["seed"]))
    fresh = build_network(hp["arch"]["name"], len(store.classes))
    assert torch.equal(start, fresh.net.state_dict()[first])
    # FT of the same architecture and seed does start from the pretrained file: the comparison can tell
    _, ft, _ = starting_network(workdir, cfg, "ft")
    assert torch.equal(ft.net.state_dict()[first], pretrained[first])


@pytest.mark.slow
def test_editing_the_weights_reruns_ft_but_not_scratch(finished_run):
    """The weights entry is no part of a scratch job's cache key (rules/common.smk: run_arch_entry)."""
    workdir, _ = finished_run
    assert scheduled_jobs(workdir, workdir / "config.yaml") == []
    edited = pretrained_config()
    edited["architectures"]["resnet_tiny"]["weights"]["epochs"] = 2
    jobs = scheduled_jobs(workdir, write_config(workdir / "edited.yaml", edited))
    trains = [wc for rule, wc in jobs if rule == "train"]
    assert "pretrain" in {rule for rule, _ in jobs}
    assert len(trains) == 1 and "strategy=ft," in trains[0]


@pytest.mark.slow
def test_the_workflows_report_shows_scratch_beside_ft(finished_run):
    workdir, _ = finished_run
    out = workdir / "results/report/classification"
    table = pd.read_csv(out / "tables/synth_derm.csv")
    assert list(table["strategy"]) == ["ft", "scratch"]
    paired = pd.read_csv(out / "paired_comparison.csv")
    assert paired[["strategy", "reference", "holm_family"]].values.tolist() == [["scratch", "ft", "scratch"]]
    assert "Does transfer help?" in (out / "paired_comparison.md").read_text()
    assert "scratch" not in set(pd.read_csv(out / "table12.csv")["strategy"])


# -- the report, on fabricated runs -------------------------------------------------------------------------------------
ARCHS = ["arch_a", "arch_b"]
SEEDS = [0, 1, 2]
LR = 0.001
# the signal each strategy's scores carry; scratch: far below FT on ds_bin (transfer helps), the best of all on
# ds_multi (transfer hurts, and scratch would top Tables 11 and 12 if they counted it)
GAIN = {"ft": 0.0, "better": 0.5, "same": 0.0}
SCRATCH_GAIN = {"ds_bin": -0.5, "ds_multi": 1.5}
DATASETS = {"ds_bin": ("binary", "auroc", ["auroc", "accuracy"], 160),
            "ds_multi": ("multiclass", "accuracy", ["accuracy", "macro_f1"], 120)}
STRATEGIES = ["ft", "better", "same"]
ORDER = ["ft", "scratch", "better", "same"]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_run(root, ds, arch, strategy, seed, y, groups, shared) -> str:
    task, primary, metrics, _ = DATASETS[ds]
    gain = SCRATCH_GAIN[ds] if strategy == "scratch" else GAIN[strategy]
    r = np.random.default_rng([seed, ORDER.index(strategy), ARCHS.index(arch), len(ds)])
    p = softmax(2 * (0.6 + gain) * y + shared + 0.3 * r.normal(size=y.shape)).astype(np.float32)
    d = root / "runs" / ds / arch / strategy / f"lr{LR:g}" / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    classes = [f"c{k}" for k in range(y.shape[1])]
    frame = pd.DataFrame({"split": "test", "index": np.arange(len(y)), "image_id": [f"i{i}" for i in range(len(y))],
                          "group": groups})
    for k, c in enumerate(classes):
        frame[f"target.{c}"] = y[:, k].astype(np.uint8)
    for k, c in enumerate(classes):
        frame[f"score.{c}"] = p[:, k]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(
        {b"medtl": json.dumps({"task": task, "classes": classes}).encode()}), d / FILE)
    test = M.compute(task, y, p, metrics)
    (d / "metrics.json").write_text(json.dumps({
        "dataset": ds, "arch": arch, "strategy": strategy, "lr": LR, "seed": seed, "primary_metric": primary,
        "monitor": primary, "best_epoch": 1, "epochs_run": 2, "device": "cpu", "seconds": 1.0,
        "val": test, "test": test}))
    return str(d / "metrics.json")


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    """Every job's metrics.json and predictions: {strategy: files}."""
    root = tmp_path_factory.mktemp("scratch_report")
    rng = np.random.default_rng(18)
    files: dict[str, list[str]] = {s: [] for s in ORDER}
    for ds, (task, _, _, n) in DATASETS.items():
        if task == "binary":
            y = np.eye(2, dtype=int)[(rng.random(n) < 0.4).astype(int)]
            groups = [""] * n                                   # independent images: DeLong
        else:
            y = np.eye(3, dtype=int)[np.repeat(rng.integers(0, 3, n // 2), 2)]
            groups = [f"p{i:03d}" for i in np.repeat(np.arange(n // 2), 2)]  # two images per patient
        shared = rng.normal(size=y.shape)
        for arch in ARCHS:
            for strategy in ORDER:
                for seed in SEEDS:
                    files[strategy].append(write_run(root, ds, arch, strategy, seed, y, groups, shared))
    return root, files


STATS = {"bootstrap_resamples": 300, "confidence_level": 0.95, "bootstrap_seed": 0}


@pytest.fixture(scope="module")
def reports(fabricated):
    """The report with scratch (named as trained from scratch, as the workflow names it), and without its runs."""
    root, files = fabricated
    with_scratch = root / "with"
    build_report([f for fs in files.values() for f in fs], str(with_scratch), reference="ft",
                 strategy_order=ORDER, arch_order=ARCHS, stats=STATS, scratch=["scratch"])
    without = root / "without"
    build_report([f for s in STRATEGIES for f in files[s]], str(without), reference="ft",
                 strategy_order=STRATEGIES, arch_order=ARCHS, stats=STATS)
    return with_scratch, without


def test_scratch_is_a_row_beside_ft_in_every_dataset_table(reports):
    out, _ = reports
    for ds in DATASETS:
        table = pd.read_csv(out / "tables" / f"{ds}.csv")
        assert list(table["strategy"]) == ORDER
        md = (out / "tables" / f"{ds}.md").read_text().splitlines()
        rows = [line.split("|")[1].strip() for line in md if line.startswith("|")][2:]
        assert rows == ORDER
    iv = pd.read_csv(out / "intervals.csv")
    assert "scratch" in set(iv["strategy"])


def test_scratch_is_tested_against_ft_in_a_holm_family_of_its_own(reports):
    from statsmodels.stats.multitest import multipletests

    out, without = reports
    pr = pd.read_csv(out / "paired_comparison.csv")
    scratch = pr[pr["strategy"] == "scratch"]
    assert len(scratch) == len(DATASETS) * len(ARCHS)
    assert (scratch["reference"] == "ft").all() and (scratch["holm_family"] == S.FAMILY_SCRATCH).all()
    np.testing.assert_allclose(scratch["p_holm"], scratch["p"])   # one scratch strategy: a family of one
    others = pr[pr["strategy"] != "scratch"]
    assert (others["holm_family"] == S.FAMILY_STRATEGIES).all()
    for _, fam in others.groupby(["dataset", "arch"]):
        np.testing.assert_allclose(fam["p_holm"], multipletests(fam["p"], method="holm")[1])
    # the strategies' tests are those of the report without scratch: adding the reference changes none of them
    base = pd.read_csv(without / "paired_comparison.csv")
    cols = ["dataset", "arch", "strategy", "diff", "ci_low", "ci_high", "p", "p_holm", "significant"]
    pd.testing.assert_frame_equal(others[cols].reset_index(drop=True), base[cols].reset_index(drop=True))
    # the built-in answers: transfer helps on ds_bin, hurts on ds_multi
    by_ds = scratch.set_index(["dataset", "arch"])
    assert by_ds.loc["ds_bin", "worse"].all() and by_ds.loc["ds_multi", "better"].all()


def test_the_paired_tests_say_whether_transfer_helps(reports):
    out, _ = reports
    md = (out / "paired_comparison.md").read_text()
    main, transfer = md.split("**Does transfer help?**")
    assert "| scratch" not in main                  # not among the strategies compared with ft
    rows = [line for line in transfer.splitlines() if line.startswith("| ds_")]
    assert len(rows) == len(DATASETS) * len(ARCHS)
    verdicts = {(r.split("|")[1].strip(), r.split("|")[2].strip()): r.split("|")[-3].strip() for r in rows}
    assert verdicts == {(ds, a): {"ds_bin": "helps", "ds_multi": "hurts"}[ds] for ds in DATASETS for a in ARCHS}
    pr = pd.read_csv(out / "paired_comparison.csv").set_index(["dataset", "arch", "strategy"])
    gain = pr.loc[("ds_bin", "arch_a", "scratch")]
    row = next(r for r in rows if [c.strip() for c in r.split("|")[1:3]] == ["ds_bin", "arch_a"])
    assert f"{-gain['diff']:+.3f}" in row                # the gain of transfer: ft − scratch
    report = (out / "report.md").read_text()
    assert "Trained from scratch (does transfer help?): scratch." in report and "**Does transfer help?**" in report


def test_the_paper_tables_leave_scratch_out(reports):
    """Tables 11 and 12 (and the best method and effectiveness tables) rank the fine-tuning strategies: with scratch
    best of all on ds_multi they are still those of the run without it, with a note naming scratch."""
    out, without = reports
    sel = pd.read_csv(out / "selected.csv")
    multi = sel[sel["dataset"] == "ds_multi"].set_index(["arch", "strategy"])["test_accuracy_mean"]
    assert all(multi[(a, "scratch")] > multi[a].drop("scratch").max() for a in ARCHS)  # scratch would win
    for name in ("table11.csv", "table12.csv", "best_method.csv", "effectiveness.csv"):
        ours, base = pd.read_csv(out / name), pd.read_csv(without / name)
        assert "scratch" not in set(ours.get("strategy", ours.get("best_strategy")).astype(str)), name
        pd.testing.assert_frame_equal(ours, base, obj=name)
    for name in ("table11.md", "table12.md", "best_method.md", "effectiveness.md"):
        assert "Not ranked here: scratch" in (out / name).read_text(), name
    # the relative improvement shows scratch: how far from ft training without transfer lands
    rel = pd.read_csv(out / "relative_improvement.csv").set_index(["dataset", "arch", "strategy"])
    assert (rel.loc[("ds_bin", "arch_a", "scratch"), "relative_improvement_pct"] < 0
            < rel.loc[("ds_multi", "arch_a", "scratch"), "relative_improvement_pct"])


def test_scratch_as_the_reference_is_an_ordinary_reference(fabricated, tmp_path):
    """report.reference: scratch: every strategy, FT included, is compared with training from scratch."""
    root, files = fabricated
    build_report([f for fs in files.values() for f in fs], str(tmp_path), reference="scratch",
                 strategy_order=ORDER, arch_order=ARCHS, stats=STATS, scratch=["scratch"])
    pr = pd.read_csv(tmp_path / "paired_comparison.csv")
    assert set(pr["strategy"]) == {"ft", "better", "same"} and (pr["holm_family"] == S.FAMILY_STRATEGIES).all()
    assert "ft" in set(pd.read_csv(tmp_path / "table12.csv")["strategy"])
    assert "Does transfer help?" not in (tmp_path / "paired_comparison.md").read_text()


def test_a_scratch_variant_starts_from_scratch_too(tmp_path):
    """Any config name of type scratch (here at a learning rate of its own) plans as scratch: no weights input."""
    config = pretrained_config()
    config["strategies"] = {"ft": {}, "no_transfer": {"type": "scratch", "learning_rates": [0.001]}}
    cfg = write_config(tmp_path / "config.yaml", copy.deepcopy(config))
    assert WEIGHTS not in train_inputs(tmp_path, cfg, "no_transfer")
