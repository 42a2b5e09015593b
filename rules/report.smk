"""Merge all training jobs into the study's tables and figures."""


rule report_classification:
    input:
        metrics=run_files("metrics.json"),
    output:
        tables=directory(f"{REPORT}/classification/tables"),
        all_runs=f"{REPORT}/classification/all_runs.csv",
        selected=f"{REPORT}/classification/selected.csv",
        effectiveness=f"{REPORT}/classification/effectiveness.csv",
        best=f"{REPORT}/classification/best_method.csv",
        relative=f"{REPORT}/classification/relative_improvement.csv",
        summary=f"{REPORT}/classification/report.md",
        figure=report(f"{REPORT}/classification/figures/relative_improvement_all.png",
                      caption="../report/relative_improvement.rst", category="Classification"),
    params:
        report=canonical({**config["report"], "strategies": list(config["strategies"]),
                          "architectures": list(config["architectures"])}),
        out_dir=f"{REPORT}/classification",
    log:
        f"{RESULTS}/logs/report_classification.log",
    localrule: True
    script:
        "../workflow_scripts/report_classification.py"
