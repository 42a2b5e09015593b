"""Starting weights: fetched by local rules before any compute job (cluster nodes need no
internet), or pretrained by the pipeline on a source dataset."""


rule fetch_weights:
    output:
        f"{RESULTS}/weights/{{arch}}/{{kind}}.pt",
    wildcard_constraints:
        kind="imagenet|checkpoint|hub",
    params:
        weights=lambda w: canonical(arch_entry(w.arch)["weights"]),
        arch=lambda w: canonical(arch_entry(w.arch)["name"]),
        cache=f"{RESULTS}/cache/torch",
    log:
        f"{RESULTS}/logs/fetch_weights/{{arch}}_{{kind}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_weights/{{arch}}_{{kind}}.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/fetch_weights.py"


rule pretrain:
    input:
        lambda w: store_files(w.source, prep_tag(w.arch)),
    output:
        f"{RESULTS}/weights/{{arch}}/pretrain-{{source}}.pt",
    params:
        weights=lambda w: canonical(arch_entry(w.arch)["weights"]),
        arch=lambda w: canonical(arch_entry(w.arch)["name"]),
        training=lambda w: canonical(pretrain_training()),
        checkpoint=lambda w: f"{RESULTS}/checkpoints/pretrain/{w.arch}-{w.source}.ckpt",
    log:
        f"{RESULTS}/logs/pretrain/{{arch}}_{{source}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{arch}}_{{source}}.tsv"
    threads: res("train", "threads", 1)
    resources:
        gpu=res("train", "gpu", 0),
        mem_mb=res("train", "mem_mb", 4000),
        runtime=res("train", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/pretrain.py"
