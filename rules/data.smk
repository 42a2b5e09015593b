"""Datasets: fetched (downloaded, generated or located) once, then prepared once per preprocessing."""


rule fetch_dataset:
    output:
        manifest=f"{RESULTS}/raw/{{dataset}}/manifest.json",
    params:
        entry=lambda w: canonical(fetch_entry(w.dataset)),
        raw_dir=lambda w: f"{RESULTS}/raw/{w.dataset}",
    log:
        f"{RESULTS}/logs/fetch_dataset/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_dataset/{{dataset}}.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/fetch_dataset.py"


rule prepare_dataset:
    input:
        manifest=rules.fetch_dataset.output.manifest,
    output:
        store_files("{dataset}", "{prep}"),
    params:
        entry=lambda w: canonical({k: v for k, v in dataset_entry(w.dataset).items()
                                   if k in ("type", "options", "val_fraction", "split_seed")}),
        preprocess=lambda w: canonical(preprocess_of(w.prep)),
    log:
        f"{RESULTS}/logs/prepare_dataset/{{dataset}}_{{prep}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_dataset/{{dataset}}_{{prep}}.tsv"
    resources:
        mem_mb=res("prepare", "mem_mb", 4000),
        runtime=res("prepare", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/prepare_dataset.py"
