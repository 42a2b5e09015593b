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
        **report_outputs("spft"),
    params:
        settings=canonical(spft_settings()),
        order=canonical({"strategies": spft_strategies(), "architectures": list(config["architectures"]),
                         "families": arch_families()}),
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
