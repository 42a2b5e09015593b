"""The second study's report (SPFT ablation, per-class AUROC, top-k against all layers, published
numbers side by side), built from the jobs of SPFT-type strategies only. Targeted by ``all`` only when
the config has such a strategy with training jobs (SPFT_REPORT is empty otherwise)."""


rule report_spft:
    input:
        metrics=spft_metric_files(),
        reference=REFERENCE_FILE,
    output:
        ablation=f"{REPORT}/spft/ablation.csv",
        ablation_md=f"{REPORT}/spft/ablation.md",
        per_class=f"{REPORT}/spft/per_class.csv",
        per_class_md=f"{REPORT}/spft/per_class.md",
        topk=f"{REPORT}/spft/topk.csv",
        topk_md=f"{REPORT}/spft/topk.md",
        side_by_side=f"{REPORT}/spft/side_by_side.csv",
        side_by_side_md=f"{REPORT}/spft/side_by_side.md",
        runs=f"{REPORT}/spft/runs.csv",
        summary=f"{REPORT}/spft/report.md",
        figure=report(f"{REPORT}/spft/figures/per_class_auc.png",
                      caption="../report/spft_per_class.rst", category="SPFT"),
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
