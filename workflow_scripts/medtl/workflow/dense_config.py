"""Checks of the optional ``detection`` and ``segmentation`` config sections that the JSON
schema cannot make: names against the dense registries, dataset options, strategy settings and
per-model training overrides against their declarations, checkpoint paths. Runs when the workflow
is parsed, so a bad config stops before any job starts; it reads only declarations, never PyTorch.
"""
from __future__ import annotations

from medtl.workflow.config import ConfigError

TASKS = ("detection", "segmentation")


def training_settings(task: str):
    """The declaration of a dense task's training settings (a model's ``training`` overrides them)."""
    if task == "detection":
        from medtl.detection.models import TRAINING
    else:
        from medtl.segmentation.spec import TRAINING
    return TRAINING


def check_dense_config(config: dict) -> None:
    from medtl.data import DENSE_DATASETS
    from medtl.data.options import declared_options
    from medtl.dense_weights import problems as weight_problems
    from medtl.report.declaration import DENSE_REPORT
    from medtl.staging import check_strategies

    errors: list[str] = []
    for task in TASKS:
        section = config.get(task)
        if not section:
            continue
        for group in ("datasets", "source_datasets"):
            for key, entry in (section.get(group) or {}).items():
                kind = (entry or {}).get("type", key)
                if kind not in DENSE_DATASETS:
                    errors.append(f"{task}.{group}.{key}: unknown dense dataset '{kind}' (set 'type' to one of: "
                                  f"{', '.join(DENSE_DATASETS.names())})")
                elif task not in DENSE_DATASETS.get(kind).tasks:
                    errors.append(f"{task}.{group}.{key}: '{kind}' has no {task} annotations "
                                  f"(it supports: {', '.join(DENSE_DATASETS.get(kind).tasks)})")
                else:
                    errors += declared_options(DENSE_DATASETS.get(kind).options).problems(
                        (entry or {}).get("options"), f"{task}.{group}.{key}.options")
        clash = sorted(set(section.get("datasets") or {}) & set(section.get("source_datasets") or {}))
        if clash:
            errors.append(f"{task}.source_datasets: {clash} also under {task}.datasets; a source needs a name of "
                          "its own")
        training = training_settings(task)
        errors += training.problems(section.get("training"), f"{task}.training")
        errors += DENSE_REPORT.problems(section.get("report"), f"{task}.report")
        for key, entry in (section.get("models") or {}).items():
            entry = entry or {}
            where = f"{task}.models.{key}"
            if task == "detection":
                from medtl.detection.models import DETECTORS

                kind = entry.get("type", key)
                if kind not in DETECTORS:
                    errors.append(f"{where}: unknown detector '{kind}' (set 'type' to one of: "
                                  f"{', '.join(DETECTORS.names())})")
            else:
                from medtl.segmentation.spec import ENCODERS

                encoder = entry.get("encoder", "vit_b")
                if encoder not in ENCODERS:
                    errors.append(f"{where}.encoder: unknown SAM encoder '{encoder}' (known: "
                                  f"{', '.join(ENCODERS.names())})")
                elif int(entry.get("img_size", 1024)) % ENCODERS.get(encoder).size_multiple:
                    errors.append(f"{where}.img_size: {entry.get('img_size')} is not allowed; {encoder} needs a "
                                  f"multiple of {ENCODERS.get(encoder).size_multiple}")
            errors += weight_problems(task, where, entry, section.get("source_datasets"))
            errors += training.problems(entry.get("training"), f"{where}.training")
        if task == "detection":
            from medtl.detection.strategies import DETECTION_STRATEGIES as registry
        else:
            from medtl.segmentation.strategies import SEGMENTATION_STRATEGIES as registry
        errors += check_strategies(task, section.get("strategies"), registry)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
