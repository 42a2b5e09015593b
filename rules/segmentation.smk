"""Segmentation (config section ``segmentation``, optional): prepared store -> one SAM job per
(dataset, model, strategy, seed), prompted with ground-truth boxes -> Dice tables and mask figures."""


rule prepare_segmentation_dataset:
    input:
        manifest=f"{RESULTS}/segmentation/raw/{{dataset}}/manifest.json",
    output:
        multiext(f"{RESULTS}/segmentation/prepared/{{dataset}}/s{{size}}/", "images.npy", "labels.csv", "masks.npy",
                 "meta.json"),
    wildcard_constraints:
        size=r"\d+",
    params:
        entry=lambda w: canonical(dense_prepare_entry("segmentation", w.dataset)),
        task="segmentation",
    log:
        f"{RESULTS}/logs/prepare_segmentation_dataset/{{dataset}}_s{{size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_segmentation_dataset/{{dataset}}_s{{size}}.tsv"
    resources:
        mem_mb=res("prepare", "mem_mb", 4000),
        runtime=res("prepare", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/prepare_dense_dataset.py"


rule train_segmentation:
    input:
        store=lambda w: segmentation_store(w.dataset),
        weights=lambda w: dense_weights_file("segmentation", w.model),
    output:
        metrics=f"{RESULTS}/segmentation/runs/{DENSE_RUN}/metrics.json",
        per_image=f"{RESULTS}/segmentation/runs/{DENSE_RUN}/per_image.csv",
        predictions=f"{RESULTS}/segmentation/runs/{DENSE_RUN}/predictions.npz",
        history=f"{RESULTS}/segmentation/runs/{DENSE_RUN}/history.csv",
        hparams=f"{RESULTS}/segmentation/runs/{DENSE_RUN}/hparams.json",
    wildcard_constraints:
        model=r"[A-Za-z0-9_\-]+",
    params:
        hp=lambda w: canonical(segmentation_hp(w)),
        checkpoint=lambda w: f"{RESULTS}/checkpoints/segmentation/{DENSE_RUN.format(**w)}/resume.ckpt",
    log:
        f"{RESULTS}/logs/train_segmentation/{DENSE_RUN}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_segmentation/{DENSE_RUN}.tsv"
    threads: res("segmentation", "threads", 1)
    resources:
        gpu=res("segmentation", "gpu", 0),
        mem_mb=res("segmentation", "mem_mb", 4000),
        runtime=res("segmentation", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/train_segmentation.py"


rule report_segmentation:
    input:
        metrics=dense_run_files("segmentation", "metrics.json"),
        predictions=dense_run_files("segmentation", "predictions.npz"),
        per_image=dense_run_files("segmentation", "per_image.csv"),
        stores=[segmentation_store(ds) for ds in dense_section("segmentation").get("datasets", {})],
        captions=captions("segmentation"),
    output:
        **report_outputs("segmentation", dense_section("segmentation").get("datasets", {})),
    params:
        report=canonical(dense_report_settings("segmentation")),
        stores=canonical({ds: dense_store_dir("segmentation", ds)
                          for ds in dense_section("segmentation").get("datasets", {})}),
    log:
        f"{RESULTS}/logs/report_segmentation.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_segmentation.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/report_segmentation.py"
