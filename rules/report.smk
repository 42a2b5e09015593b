"""Merge all training jobs into the study's tables and figures."""


rule report_classification:
    input:
        metrics=run_files("metrics.json"),
        predictions=run_files("predictions.parquet"),  # per image: intervals and paired tests
    output:
        tables=directory(f"{REPORT}/classification/tables"),
        all_runs=f"{REPORT}/classification/all_runs.csv",
        selected=f"{REPORT}/classification/selected.csv",
        effectiveness=f"{REPORT}/classification/effectiveness.csv",
        best=f"{REPORT}/classification/best_method.csv",
        relative=f"{REPORT}/classification/relative_improvement.csv",
        table11=f"{REPORT}/classification/table11.csv",
        table12=f"{REPORT}/classification/table12.csv",
        summary=f"{REPORT}/classification/report.md",
        figure=report(f"{REPORT}/classification/figures/relative_improvement_all.png",
                      caption="../report/relative_improvement.rst", category="Classification"),
        intervals=report(f"{REPORT}/classification/intervals.csv", caption="../report/intervals.rst",
                         category="Classification", subcategory="Intervals and paired tests"),
        paired=report(f"{REPORT}/classification/paired_comparison.csv", caption="../report/paired_comparison.rst",
                      category="Classification", subcategory="Intervals and paired tests"),
        forest=[report(f"{REPORT}/classification/figures/forest_{ds}.png", caption="../report/forest.rst",
                       category="Classification", subcategory="Forest plots", labels={"dataset": ds})
                for ds in dict.fromkeys(r["dataset"] for r in training_runs())],
    params:
        report=canonical({**config["report"], "strategies": list(config["strategies"]),
                          "architectures": list(config["architectures"])}),
        out_dir=lambda w, output: str(Path(output.summary).parent),
    log:
        f"{RESULTS}/logs/report_classification.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_classification.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/report_classification.py"
