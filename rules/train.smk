"""One job per (dataset, architecture, strategy, learning rate, seed)."""


def train_hp(w):
    """The only config a training job depends on; editing anything else never reruns it."""
    entry = dataset_entry(w.dataset)
    return {
        "dataset": {"name": w.dataset, "metrics": entry.get("metrics"), "primary_metric": entry.get("primary_metric")},
        "arch": arch_entry(w.arch),
        "strategy": strategy_entry(w.strategy),
        "training": config["training"],
        "lr": float(w.lr),
        "seed": int(w.seed),
    }


def train_inputs(w):
    # one input function, not one per input: Snakemake inspects each function of each of the 1,728 jobs
    return {
        "store": store_files(w.dataset, prep_tag(w.arch)),
        "weights": weights_file(w.arch),
        "features": run_features(w),  # rules/features.smk: cached backbone features, for LP and LP-FT
    }


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics=f"{RESULTS}/runs/{RUN}/metrics.json",
        predictions=f"{RESULTS}/runs/{RUN}/predictions.parquet",  # per image: intervals, paired tests
        history=f"{RESULTS}/runs/{RUN}/history.csv",
        hparams=f"{RESULTS}/runs/{RUN}/hparams.json",
    params:
        hp=lambda w: canonical(train_hp(w)),
        checkpoint=f"{RESULTS}/checkpoints/runs/{RUN}/resume.ckpt",  # a pattern: no function to call per job
    log:
        f"{RESULTS}/logs/train/{RUN}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{RUN}.tsv"
    threads: res("train", "threads", 1)
    resources:
        gpu=res("train", "gpu", 0),
        mem_mb=res("train", "mem_mb", 4000),
        runtime=res("train", "runtime", 120),
    script:
        "../workflow_scripts/train.py"
