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
        summary=f"{REPORT}/published/side_by_side.md",
        page=report(f"{REPORT}/published/side_by_side.html", caption="../report/published/side_by_side.rst",
                    category="Classification · published numbers", subcategory="Side by side",
                    labels={"result": "our results next to the published ones, and the recounts"}),
        side_by_side=report(f"{REPORT}/published/side_by_side.csv",
                            caption="../report/published/side_by_side_data.rst",
                            category="Classification · published numbers", subcategory="Data",
                            labels={"file": "side_by_side.csv"}),
        recount_table11=report(f"{REPORT}/published/recount_table11.csv", caption="../report/published/recount.rst",
                               category="Classification · published numbers", subcategory="Data",
                               labels={"file": "recount_table11.csv"}),
        recount_table12=report(f"{REPORT}/published/recount_table12.csv", caption="../report/published/recount.rst",
                               category="Classification · published numbers", subcategory="Data",
                               labels={"file": "recount_table12.csv"}),
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
