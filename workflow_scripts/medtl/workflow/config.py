"""Checks that a JSON schema cannot make: names against the registries, settings against each
strategy's and dataset source's declaration (type, range, known keys), and references between
sections. Runs when the workflow is parsed, so a bad config stops before any job starts; it reads
only the registries' declarations, never PyTorch, so that planning stays light.
"""
from __future__ import annotations

import json


class ConfigError(ValueError):
    pass


#: keys of a strategy entry that select jobs rather than set the strategy
SELECTION_KEYS = ("type", "learning_rates", "architectures")


def canonical(obj) -> str:
    """One stable text per value: what Snakemake compares to decide whether params changed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def check_config(config: dict) -> None:
    from medtl.data import DATASETS
    from medtl.data.options import declared_options
    from medtl.models.spec import ARCHS
    from medtl.strategies import STRATEGIES

    errors: list[str] = []
    if not (config.get("datasets") or config.get("detection") or config.get("segmentation")):
        raise ConfigError("invalid config: it has no task: give classification datasets (with architectures, "
                          "strategies and learning_rates), a detection section or a segmentation section")
    if config.get("datasets"):
        missing = [k for k in ("architectures", "strategies", "learning_rates") if not config.get(k)]
        if missing:
            raise ConfigError(f"invalid config: classification datasets ({', '.join(config['datasets'])}) need "
                              f"{', '.join(missing)}: add {'them' if len(missing) > 1 else 'it'}, or remove "
                              "datasets for a detection or segmentation study only")
    for section in ("datasets", "source_datasets"):
        for key, entry in config.get(section, {}).items():
            kind = (entry or {}).get("type", key)
            if kind not in DATASETS:
                errors.append(f"{section}.{key}: unknown dataset '{kind}' (set 'type' to one of: "
                              f"{', '.join(DATASETS.names())})")
                continue
            errors += declared_options(DATASETS.get(kind).options).problems(
                (entry or {}).get("options"), f"{section}.{key}.options")
    for key, entry in config["architectures"].items():
        kind = (entry or {}).get("type", key)
        if kind not in ARCHS:
            errors.append(f"architectures.{key}: {ARCHS.why_unknown(kind)}")
            continue
        spec = ARCHS.get(kind)
        weights = (entry or {}).get("weights", {"type": "none"})
        if weights["type"] == "pretrain" and weights.get("dataset") not in config.get("source_datasets", {}):
            errors.append(f"architectures.{key}.weights.dataset: '{weights.get('dataset')}' must be a key of "
                          "source_datasets")
        if weights["type"] == "checkpoint" and not weights.get("path"):
            errors.append(f"architectures.{key}.weights.path: a checkpoint needs a path")
        if weights["type"] == "imagenet" and not spec.imagenet_weights:
            errors.append(f"architectures.{key}.weights: '{kind}' has no ImageNet weights; use pretrain or none")
        preprocess = {**spec.default_preprocess, **(entry or {}).get("preprocess", {})}
        if preprocess["crop"] > preprocess["resize"]:
            errors.append(f"architectures.{key}.preprocess.crop: {preprocess['crop']} is larger than resize "
                          f"{preprocess['resize']} (the shorter side): the crop would be padded with black; "
                          "allowed: crop <= resize")
    for key, entry in config["strategies"].items():
        entry = entry or {}
        kind = entry.get("type", key)
        if kind not in STRATEGIES:
            errors.append(f"strategies.{key}: unknown strategy '{kind}' (set 'type' to one of: "
                          f"{', '.join(STRATEGIES.names())})")
            continue
        settings = {k: v for k, v in entry.items() if k not in SELECTION_KEYS}
        errors += STRATEGIES.get(kind).problems(settings, f"strategies.{key}")
    for key, entry in config["architectures"].items():
        for section in ("datasets", "strategies"):
            for name in (entry or {}).get(section, []):
                if name not in config[section]:
                    errors.append(f"architectures.{key}.{section}: '{name}' is not a key of {section}")
    for key, entry in config["strategies"].items():
        for name in (entry or {}).get("architectures", []):
            if name not in config["architectures"]:
                errors.append(f"strategies.{key}.architectures: '{name}' is not a key of architectures")
    reference = config.get("report", {}).get("reference", "ft")
    if config["datasets"] and reference not in config["strategies"]:
        errors.append(f"report.reference: '{reference}' is not one of the configured strategies")
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
