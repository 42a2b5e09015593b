"""Frozen computation done once: the backbone features of every image of a prepared store, per
(dataset, architecture, starting weights). Training jobs whose strategy declares a frozen backbone
(LP, the LP stage of LP-FT: ``frozen_backbone_when`` in its declaration) train the head on them instead of
running the frozen backbone in every epoch; 3 learning rates x 3 seeds x 2 strategies share one."""


def strategy_freezes_backbone(strategy):
    from medtl.strategies import STRATEGIES, uses_frozen_features

    entry = strategy_entry(strategy)
    return uses_frozen_features(STRATEGIES.get(entry["type"]), entry["settings"],
                                config["training"].get("frozen_bn", "eval"))


def features_files(dataset, arch):
    return multiext(f"{RESULTS}/features/{dataset}/{arch}/{weights_id(arch)}", ".npy", ".json")


def run_features(w):
    """The train rule's ``features`` input: cached features when the strategy has frozen-backbone
    epochs and the weights are fixed (with weights 'none' the backbone is random, drawn per seed)."""
    if weights_id(w.arch) == "none" or not strategy_freezes_backbone(w.strategy):
        return []
    return features_files(w.dataset, w.arch)


def features_spec(w):
    """Everything the features depend on besides the store; checked again by the jobs that load them."""
    from medtl.training.spec import describe

    if w.weights != weights_id(w.arch):
        raise ValueError(f"features of {w.arch} exist only for its configured weights '{weights_id(w.arch)}', "
                         f"not '{w.weights}'")
    entry = arch_entry(w.arch)
    return describe(entry["name"], entry["weights"], config["training"].get("normalize"))


rule extract_features:
    input:
        store=lambda w: store_files(w.dataset, prep_tag(w.arch)),
        weights=lambda w: weights_file(w.arch),
    output:
        features=f"{RESULTS}/features/{{dataset}}/{{arch}}/{{weights}}.npy",
        meta=f"{RESULTS}/features/{{dataset}}/{{arch}}/{{weights}}.json",
    wildcard_constraints:
        weights=r"[A-Za-z0-9_\-]+",
    params:
        spec=lambda w: canonical(features_spec(w)),
    log:
        f"{RESULTS}/logs/extract_features/{{dataset}}_{{arch}}_{{weights}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_features/{{dataset}}_{{arch}}_{{weights}}.tsv"
    threads: res("features", "threads", res("train", "threads", 1))
    resources:
        gpu=res("features", "gpu", res("train", "gpu", 0)),
        mem_mb=res("features", "mem_mb", res("train", "mem_mb", 4000)),
        runtime=res("features", "runtime", res("train", "runtime", 120)),
    script:
        "../workflow_scripts/extract_features.py"
