"""The second study's report (SPFT ablation, per-class AUROC, top-k against all layers, published
numbers side by side), built from the jobs of SPFT-type strategies only. Targeted by ``all`` only when
the config has such a strategy with training jobs (SPFT_REPORT is empty otherwise). Captions in
Snakemake's HTML report: report/spft/."""


rule report_spft:
    input:
        metrics=spft_metric_files(),
        reference=REFERENCE_FILE,
        schema=str(Path(workflow.basedir) / "schemas" / "published.schema.yaml"),  # what the reference file is checked by
        captions=captions("spft"),
    output:
        ablation=f"{REPORT}/spft/ablation.csv",
        ablation_md=f"{REPORT}/spft/ablation.md",
        ablation_page=report(f"{REPORT}/spft/ablation.html", caption="../report/spft/ablation.rst",
                             category="Classification · study 2 (SPFT)", subcategory="Tables and figures",
                             labels={"result": "ablation"}),
        topk=f"{REPORT}/spft/topk.csv",
        topk_md=f"{REPORT}/spft/topk.md",
        topk_page=report(f"{REPORT}/spft/topk.html", caption="../report/spft/topk.rst",
                         category="Classification · study 2 (SPFT)", subcategory="Tables and figures",
                         labels={"result": "top-k layers against all layers"}),
        per_class=f"{REPORT}/spft/per_class.csv",
        per_class_md=f"{REPORT}/spft/per_class.md",
        per_class_page=report(f"{REPORT}/spft/per_class.html", caption="../report/spft/per_class.rst",
                              category="Classification · study 2 (SPFT)", subcategory="Tables and figures",
                              labels={"result": "per-class AUROC"}),
        figure=report(f"{REPORT}/spft/figures/per_class_auc.png", caption="../report/spft/per_class_auc.rst",
                      category="Classification · study 2 (SPFT)", subcategory="Tables and figures",
                      labels={"result": "per-class AUROC: figure"}),
        side_by_side_md=f"{REPORT}/spft/side_by_side.md",
        side_by_side_page=report(f"{REPORT}/spft/side_by_side.html", caption="../report/spft/side_by_side.rst",
                                 category="Classification · study 2 (SPFT)", subcategory="Tables and figures",
                                 labels={"result": "published numbers side by side"}),
        side_by_side=report(f"{REPORT}/spft/side_by_side.csv", caption="../report/spft/side_by_side_data.rst",
                            category="Classification · study 2 (SPFT)", subcategory="Data",
                            labels={"file": "side_by_side.csv"}),
        runs=report(f"{REPORT}/spft/runs.csv", caption="../report/spft/runs.rst",
                    category="Classification · study 2 (SPFT)", subcategory="Data", labels={"file": "runs.csv"}),
        summary=f"{REPORT}/spft/report.md",
    params:
        settings=canonical(spft_settings()),
        order=canonical({"strategies": spft_strategies(), "architectures": list(config["architectures"]),
                         "families": arch_families()}),
        out_dir=lambda w, output: str(Path(output.summary).parent),
    log:
        f"{RESULTS}/logs/report_spft.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_spft.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/report_spft.py"


SPFT_REPORT = list(rules.report_spft.output) if spft_metric_files() else []
