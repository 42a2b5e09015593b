"""Frozen computation done once: the backbone features of every image of a prepared store, per
(dataset, architecture, starting weights). Training jobs whose strategy declares a frozen backbone
(LP, the LP stage of LP-FT: ``frozen_backbone_when`` in its declaration) train the head on them instead of
running the frozen backbone in every epoch; 3 learning rates x 3 seeds x 2 strategies share one."""


rule extract_features:
    input:
        store=lambda w: store_files(w.dataset, prep_tag(w.arch)),
        weights=lambda w: weights_file(w.arch),
    output:
        features=f"{RESULTS}/features/{{dataset}}/{{arch}}/{{weights}}.npy",
        meta=f"{RESULTS}/features/{{dataset}}/{{arch}}/{{weights}}.json",
    wildcard_constraints:
        weights=r"[A-Za-z0-9_\-]+",
    params:
        spec=lambda w: canonical(features_spec(w)),
    log:
        f"{RESULTS}/logs/extract_features/{{dataset}}_{{arch}}_{{weights}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_features/{{dataset}}_{{arch}}_{{weights}}.tsv"
    threads: res("features", "threads", res("train", "threads", 1))
    resources:
        gpu=res("features", "gpu", res("train", "gpu", 0)),
        mem_mb=res("features", "mem_mb", res("train", "mem_mb", 4000)),
        runtime=res("features", "runtime", res("train", "runtime", 120)),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/extract_features.py"
