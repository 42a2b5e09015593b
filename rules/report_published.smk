"""Every result of this run next to the published number of the same setting (dataset, architecture,
strategy, metric), from the hand-typed reference file references/published.yaml."""


rule report_published:
    input:
        metrics=run_files("metrics.json"),
        reference=str(Path(workflow.basedir) / "references" / "published.yaml"),
    output:
        side_by_side=f"{REPORT}/published/side_by_side.csv",
        summary=f"{REPORT}/published/side_by_side.md",
    params:
        out_dir=f"{REPORT}/published",
    log:
        f"{RESULTS}/logs/report_published.log",
    localrule: True
    script:
        "../workflow_scripts/report_published.py"
