"""The second study's report (SPFT ablation, per-class AUROC, top-k against all layers, published
numbers side by side), built from the jobs of SPFT-type strategies only. Targeted by ``all`` only when
the config has such a strategy with training jobs (SPFT_REPORT is empty otherwise)."""

REFERENCE_FILE = str(Path(workflow.basedir) / "references" / "published.yaml")


def spft_strategies():
    """Config names of the strategies of type 'spft' (variants included), in config order."""
    return [s for s, e in config["strategies"].items() if (e or {}).get("type", s) == "spft"]


def spft_settings():
    """Each SPFT variant's resolved settings: its config entry over SPFT's defaults."""
    from medtl.strategies import STRATEGIES

    defaults = STRATEGIES.get("spft").defaults
    return {s: {**defaults, **strategy_entry(s)["settings"]} for s in spft_strategies()}


def spft_metric_files():
    names = set(spft_strategies())
    return [f"{RESULTS}/runs/{RUN.format(**r)}/metrics.json" for r in training_runs() if r["strategy"] in names]


def arch_families():
    from medtl.models.spec import ARCHS

    return {a: ARCHS.get(arch_entry(a)["name"]).family for a in config["architectures"]}


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
        out_dir=f"{REPORT}/spft",
    log:
        f"{RESULTS}/logs/report_spft.log",
    localrule: True
    script:
        "../workflow_scripts/report_spft.py"


SPFT_REPORT = list(rules.report_spft.output) if spft_metric_files() else []
