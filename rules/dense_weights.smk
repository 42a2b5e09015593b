"""Starting weights of the dense models: pretrained by the pipeline on a source dataset of the task
(the embedded default's offline start, as classification pretrains on synth_source), or a released
checkpoint fetched once by a local rule before any compute job (cluster nodes need no internet).
Helpers: rules/common_dense.smk."""


rule fetch_dense_weights:
    output:
        f"{RESULTS}/{{task}}/weights/{{model}}/release.pt",
    wildcard_constraints:
        task="detection|segmentation",
        model=r"[A-Za-z0-9_\-]+",
    params:
        entry=lambda w: canonical(dense_model_entry(w.task, w.model)),
        cache=lambda w: f"{RESULTS}/cache/{w.task}_weights",
        config_dir=ULTRALYTICS_CONFIG,
    log:
        f"{RESULTS}/logs/fetch_dense_weights/{{task}}_{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_dense_weights/{{task}}_{{model}}.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/fetch_dense_weights.py"


rule pretrain_detector:
    input:
        data=lambda w: f"{RESULTS}/detection/yolo/{w.source}/s{dense_size('detection', w.source)}",
    output:
        f"{RESULTS}/detection/weights/{{model}}/pretrain-{{source}}.pt",
    wildcard_constraints:
        model=r"[A-Za-z0-9_\-]+",
    params:
        entry=lambda w: canonical(dense_pretrain_entry("detection", w.model, w.source)),
        checkpoint_dir=lambda w: f"{RESULTS}/checkpoints/pretrain_detector/{w.model}-{w.source}",
        config_dir=ULTRALYTICS_CONFIG,
    log:
        f"{RESULTS}/logs/pretrain_detector/{{model}}_{{source}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_detector/{{model}}_{{source}}.tsv"
    threads: res("detection", "threads", 1)
    resources:
        gpu=res("detection", "gpu", 0),
        mem_mb=res("detection", "mem_mb", 4000),
        runtime=res("detection", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/pretrain_detector.py"


rule pretrain_sam:
    input:
        store=lambda w: segmentation_store(w.source),
    output:
        f"{RESULTS}/segmentation/weights/{{model}}/pretrain-{{source}}.pt",
    wildcard_constraints:
        model=r"[A-Za-z0-9_\-]+",
    params:
        entry=lambda w: canonical(dense_pretrain_entry("segmentation", w.model, w.source)),
        checkpoint=lambda w: f"{RESULTS}/checkpoints/pretrain_sam/{w.model}-{w.source}.ckpt",
    log:
        f"{RESULTS}/logs/pretrain_sam/{{model}}_{{source}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_sam/{{model}}_{{source}}.tsv"
    threads: res("segmentation", "threads", 1)
    resources:
        gpu=res("segmentation", "gpu", 0),
        mem_mb=res("segmentation", "mem_mb", 4000),
        runtime=res("segmentation", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/pretrain_sam.py"
