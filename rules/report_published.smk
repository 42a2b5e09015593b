"""Every result of this run next to the published number of the same setting (dataset, architecture,
strategy, metric), from the hand-typed reference file references/published.yaml, and the papers' printed
summary tables (best method per dataset, effectiveness) next to their recount from the published
per-setting tables (recount_table11.csv, recount_table12.csv; these depend on the reference file only).
Captions in Snakemake's HTML report: report/published/."""


rule report_published:
    input:
        metrics=run_files("metrics.json"),
        reference=REFERENCE_FILE,
        schema=str(Path(workflow.basedir) / "schemas" / "published.schema.yaml"),  # what the reference file is checked by
        intervals=f"{REPORT}/classification/intervals.csv",  # our interval beside each published number
        captions=captions("published"),
    output:
        **report_outputs("published"),
    log:
        f"{RESULTS}/logs/report_published.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_published.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/report_published.py"
