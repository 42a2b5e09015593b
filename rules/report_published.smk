"""Every result of this run next to the published number of the same setting (dataset, architecture,
strategy, metric), from the hand-typed reference file references/published.yaml, and the papers' printed
summary tables (best method per dataset, effectiveness) next to their recount from the published
per-setting tables (recount_table11.csv, recount_table12.csv; these depend on the reference file only)."""


rule report_published:
    input:
        metrics=run_files("metrics.json"),
        reference=str(Path(workflow.basedir) / "references" / "published.yaml"),
        intervals=f"{REPORT}/classification/intervals.csv",  # our interval beside each published number
    output:
        side_by_side=f"{REPORT}/published/side_by_side.csv",
        summary=f"{REPORT}/published/side_by_side.md",
        recount_table11=f"{REPORT}/published/recount_table11.csv",
        recount_table12=f"{REPORT}/published/recount_table12.csv",
    params:
        out_dir=lambda w, output: str(Path(output.summary).parent),
    log:
        f"{RESULTS}/logs/report_published.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_published.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/report_published.py"
