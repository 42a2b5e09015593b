"""Merge all training jobs into the first study's tables and figures. Every table and figure is in
Snakemake's HTML report (snakemake --report report.html), with its caption from report/classification/
(every file declared once, in workflow_scripts/medtl/report/outputs.py);
tables as HTML pages rendered from their Markdown, the data behind them as CSV downloads."""


# What the reports read from every training job, as targets of `rule all` (Snakefile). Snakemake (>= 7.7) reruns
# no job whose output is missing while the files made from it exist (a report's input counts for nothing there),
# so a deleted or never-written metrics.json would be ignored and the reports left stale; as a target, a missing
# file reruns its job, and the reports after it.
REPORT_RUN_INPUTS = [
    *run_files("metrics.json"), *run_files("predictions.parquet"),
    *dense_run_files("detection", "metrics.json"), *dense_run_files("detection", "predictions.csv"),
    *dense_run_files("segmentation", "metrics.json"), *dense_run_files("segmentation", "predictions.npz"),
    *dense_run_files("segmentation", "per_image.csv"),
]


rule report_classification:
    input:
        metrics=run_files("metrics.json"),
        predictions=run_files("predictions.parquet"),  # per image: intervals and paired tests
        captions=captions("classification"),
    output:
        **report_outputs("classification", run_datasets()),
    params:
        report=canonical(PLAN.report_settings()),
    log:
        f"{RESULTS}/logs/report_classification.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_classification.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/report_classification.py"
