"""One job per (dataset, architecture, strategy, learning rate, seed)."""


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
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/train.py"
