"""Merge all training jobs into the first study's tables and figures. Every table and figure is in
Snakemake's HTML report (snakemake --report report.html), with its caption from report/classification/;
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
        # per dataset: test scores, their intervals, the relative improvement, the paired differences
        tables=[f"{REPORT}/classification/tables/{ds}.{ext}" for ds in run_datasets() for ext in ("csv", "md")],
        table_pages=[
            report(f"{REPORT}/classification/tables/{ds}.html", caption="../report/classification/dataset_table.rst",
                   category="Classification · study 1 (strategies)", subcategory="Per dataset",
                   labels={"dataset": ds, "result": "scores"})
            for ds in run_datasets()
        ],
        intervals_md=[f"{REPORT}/classification/tables/{ds}_intervals.md" for ds in run_datasets()],
        interval_pages=[
            report(f"{REPORT}/classification/tables/{ds}_intervals.html",
                   caption="../report/classification/intervals.rst",
                   category="Classification · study 1 (strategies)", subcategory="Per dataset",
                   labels={"dataset": ds, "result": "scores: intervals"})
            for ds in run_datasets()
        ],
        bars=[
            report(f"{REPORT}/classification/figures/relative_improvement_{ds}.png",
                   caption="../report/classification/relative_improvement_dataset.rst",
                   category="Classification · study 1 (strategies)", subcategory="Per dataset",
                   labels={"dataset": ds, "result": "relative improvement"})
            for ds in run_datasets()
        ],
        forest=[
            report(f"{REPORT}/classification/figures/forest_{ds}.png", caption="../report/classification/forest.rst",
                   category="Classification · study 1 (strategies)", subcategory="Per dataset",
                   labels={"dataset": ds, "result": "relative improvement: forest plot"})
            for ds in run_datasets()
        ],
        # across datasets
        relative=f"{REPORT}/classification/relative_improvement.csv",
        relative_md=f"{REPORT}/classification/relative_improvement.md",
        relative_page=report(f"{REPORT}/classification/relative_improvement.html",
                             caption="../report/classification/relative_improvement.rst",
                             category="Classification · study 1 (strategies)", subcategory="Across datasets",
                             labels={"result": "relative improvement"}),
        figure=report(f"{REPORT}/classification/figures/relative_improvement_all.png",
                      caption="../report/classification/relative_improvement_all.rst",
                      category="Classification · study 1 (strategies)", subcategory="Across datasets",
                      labels={"result": "relative improvement: heatmap"}),
        best=f"{REPORT}/classification/best_method.csv",
        best_md=f"{REPORT}/classification/best_method.md",
        best_page=report(f"{REPORT}/classification/best_method.html",
                         caption="../report/classification/best_method.rst",
                         category="Classification · study 1 (strategies)", subcategory="Across datasets",
                         labels={"result": "best method per dataset and architecture"}),
        effectiveness=f"{REPORT}/classification/effectiveness.csv",
        effectiveness_md=f"{REPORT}/classification/effectiveness.md",
        effectiveness_page=report(f"{REPORT}/classification/effectiveness.html",
                                  caption="../report/classification/effectiveness.rst",
                                  category="Classification · study 1 (strategies)", subcategory="Across datasets",
                                  labels={"result": "effectiveness per strategy"}),
        table11=f"{REPORT}/classification/table11.csv",
        table11_md=f"{REPORT}/classification/table11.md",
        table11_page=report(f"{REPORT}/classification/table11.html", caption="../report/classification/table11.rst",
                            category="Classification · study 1 (strategies)", subcategory="Across datasets",
                            labels={"result": "Table 11: best method per dataset"}),
        table12=f"{REPORT}/classification/table12.csv",
        table12_md=f"{REPORT}/classification/table12.md",
        table12_page=report(f"{REPORT}/classification/table12.html", caption="../report/classification/table12.rst",
                            category="Classification · study 1 (strategies)", subcategory="Across datasets",
                            labels={"result": "Table 12: effectiveness per architecture"}),
        cost=f"{REPORT}/classification/cost.csv",
        cost_md=f"{REPORT}/classification/cost.md",
        cost_page=report(f"{REPORT}/classification/cost.html", caption="../report/classification/cost.rst",
                         category="Classification · study 1 (strategies)", subcategory="Across datasets",
                         labels={"result": "cost beside quality"}),
        paired=f"{REPORT}/classification/paired_comparison.csv",
        paired_md=f"{REPORT}/classification/paired_comparison.md",
        paired_page=report(f"{REPORT}/classification/paired_comparison.html",
                           caption="../report/classification/paired_comparison.rst",
                           category="Classification · study 1 (strategies)", subcategory="Across datasets",
                           labels={"result": "paired tests against the reference"}),
        # one verdict across datasets (medtl.report.verdict): Friedman, Nemenyi's CD diagram, Bayesian signed-rank
        verdict_friedman=f"{REPORT}/classification/verdict_friedman.csv",
        verdict_friedman_md=f"{REPORT}/classification/verdict_friedman.md",
        verdict_friedman_page=report(f"{REPORT}/classification/verdict_friedman.html",
                                     caption="../report/classification/verdict_friedman.rst",
                                     category="Classification · study 1 (strategies)", subcategory="One verdict",
                                     labels={"result": "Friedman test and average ranks"}),
        critical_difference=report(f"{REPORT}/classification/figures/critical_difference.png",
                                   caption="../report/classification/critical_difference.rst",
                                   category="Classification · study 1 (strategies)", subcategory="One verdict",
                                   labels={"result": "critical-difference diagram (Nemenyi)"}),
        verdict_bayes=f"{REPORT}/classification/verdict_bayes.csv",
        verdict_bayes_md=f"{REPORT}/classification/verdict_bayes.md",
        verdict_bayes_page=report(f"{REPORT}/classification/verdict_bayes.html",
                                  caption="../report/classification/verdict_bayes.rst",
                                  category="Classification · study 1 (strategies)", subcategory="One verdict",
                                  labels={"result": "Bayesian signed-rank test against the reference"}),
        verdict_modality=f"{REPORT}/classification/verdict_modality.csv",
        verdict_modality_md=f"{REPORT}/classification/verdict_modality.md",
        verdict_modality_page=report(f"{REPORT}/classification/verdict_modality.html",
                                     caption="../report/classification/verdict_modality.rst",
                                     category="Classification · study 1 (strategies)", subcategory="One verdict",
                                     labels={"result": "which strategy for which modality"}),
        # the data behind the tables, as downloads
        all_runs=report(f"{REPORT}/classification/all_runs.csv", caption="../report/classification/all_runs.rst",
                        category="Classification · study 1 (strategies)", subcategory="Data",
                        labels={"file": "all_runs.csv"}),
        per_lr=report(f"{REPORT}/classification/per_lr.csv", caption="../report/classification/per_lr.rst",
                      category="Classification · study 1 (strategies)", subcategory="Data",
                      labels={"file": "per_lr.csv"}),
        selected=report(f"{REPORT}/classification/selected.csv", caption="../report/classification/selected.rst",
                        category="Classification · study 1 (strategies)", subcategory="Data",
                        labels={"file": "selected.csv"}),
        intervals=report(f"{REPORT}/classification/intervals.csv",
                         caption="../report/classification/intervals_data.rst",
                         category="Classification · study 1 (strategies)", subcategory="Data",
                         labels={"file": "intervals.csv"}),
        summary=f"{REPORT}/classification/report.md",
    params:
        report=canonical(PLAN.report_settings()),
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
