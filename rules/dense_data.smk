"""The datasets of the optional dense tasks (detection, segmentation): one fetch shared by both.
Each task has its own raw and prepared folders, so the same source may be configured differently
for each (helpers: rules/common_dense.smk)."""


rule fetch_dense_dataset:
    output:
        manifest=f"{RESULTS}/{{task}}/raw/{{dataset}}/manifest.json",
    wildcard_constraints:
        task="detection|segmentation",
    params:
        entry=lambda w: canonical(dense_fetch_entry(w.task, w.dataset)),
        raw_dir=lambda w: f"{RESULTS}/{w.task}/raw/{w.dataset}",
    log:
        f"{RESULTS}/logs/fetch_dense_dataset/{{task}}_{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_dense_dataset/{{task}}_{{dataset}}.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/fetch_dense_dataset.py"

