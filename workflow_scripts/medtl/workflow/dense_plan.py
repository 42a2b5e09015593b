"""The optional dense tasks (``detection``, ``segmentation``) as jobs, from the config alone (no PyTorch, no
Ultralytics, no Snakemake): each dataset, model and strategy entry as a job sees it, the grid, and each job's
settings -- its cache key, by the one rule of :mod:`medtl.workflow.plan`: the task's ``training`` settings and the
strategy's settings resolved by their declarations, defaults included, then keyed (``Settings.key``).

``rules/common_dense.smk`` calls :class:`DensePlan` and keeps only paths, input functions and targets.
"""
from __future__ import annotations

from typing import Iterator

#: a task's default image size when a dataset entry sets none
DEFAULT_SIZE = {"detection": 640, "segmentation": 1024}


def strategies_of(task: str):
    if task == "detection":
        from medtl.detection.strategies import DETECTION_STRATEGIES as registry
    else:
        from medtl.segmentation.strategies import SEGMENTATION_STRATEGIES as registry
    return registry


class DensePlan:
    def __init__(self, config: dict, task: str):
        self.config, self.task = config, task

    @property
    def section(self) -> dict:
        return self.config.get(self.task) or {}

    # -- datasets -------------------------------------------------------------------------------------
    def entry(self, name: str) -> dict:
        """A dataset of the task: one it trains and tests on, or a source it pretrains on."""
        datasets = self.section.get("datasets") or {}
        entry = (datasets[name] if name in datasets else (self.section.get("source_datasets") or {})[name]) or {}
        return {"type": entry.get("type", name), **entry}

    def size(self, name: str) -> int:
        return int(self.entry(name).get("size") or DEFAULT_SIZE[self.task])

    def seeds(self) -> list:
        return self.section.get("seeds") or self.config["seeds"]

    def fetch_entry(self, name: str) -> dict:
        """type and options for fetching; sources with files put there by hand (they declare a ``raw_data``
        option) also get the config's ``raw_data`` folder."""
        from medtl.data import DENSE_DATASETS

        entry = {k: v for k, v in self.entry(name).items() if k in ("type", "options")}
        if "raw_data" in DENSE_DATASETS.get(entry["type"]).options:
            entry["options"] = {"raw_data": self.config["raw_data"], **(entry.get("options") or {})}
        return entry

    def prepare_entry(self, dataset: str) -> dict:
        """What a prepared store depends on: the source and its options, and how validation is carved."""
        return {k: v for k, v in self.entry(dataset).items() if k in ("type", "options", "val_fraction", "split_seed")}

    # -- models, strategies, training -------------------------------------------------------------------
    def model_entry(self, model: str) -> dict:
        return self.section["models"][model] or {}

    def training_declaration(self):
        from medtl.workflow.dense_config import training_settings

        return training_settings(self.task)

    def training(self, model: str) -> dict:
        """The task's training settings with the model's own overrides on top, resolved and keyed."""
        declared = self.training_declaration()
        merged = {**(self.section.get("training") or {}), **(self.model_entry(model).get("training") or {})}
        return declared.key(declared.resolve(merged, f"{self.task}.models.{model}.training"), merged)

    def strategy_entry(self, name: str) -> dict:
        entry = dict(self.section["strategies"][name] or {})
        kind = entry.pop("type", name)
        spec = strategies_of(self.task).get(kind)
        return {"name": name, "type": kind,
                "settings": spec.settings.key(spec.resolve(entry, f"{self.task}.strategies.{name}"), entry)}

    def weights_key(self, model: str) -> dict:
        """The model's weights entry, keyed: its type's declared defaults filled in
        (``medtl.models.weights_declaration.DENSE_WEIGHTS``; a weights job restores it with ``weights_settings``)."""
        from medtl.models.weights_declaration import DENSE_WEIGHTS, resolve_weights, weights_key

        written = self.model_entry(model).get("weights")
        resolved = resolve_weights(written, f"{self.task}.models.{model}.weights", DENSE_WEIGHTS)
        return weights_key(resolved, written, DENSE_WEIGHTS)

    def model_key(self, model: str) -> dict:
        entry = self.model_entry(model)
        weights = self.weights_key(model)
        if self.task == "detection":
            return {"name": model, "type": entry.get("type", model), "cfg": entry.get("cfg"), "weights": weights}
        from medtl.segmentation.spec import MODEL_DEFAULTS

        return {"name": model, "encoder": entry.get("encoder", MODEL_DEFAULTS["encoder"]),
                "img_size": entry.get("img_size", MODEL_DEFAULTS["img_size"]), "weights": weights}

    # -- the grid and a job's key ---------------------------------------------------------------------
    def runs(self) -> Iterator[dict]:
        for dataset in self.section.get("datasets", {}):
            for model in self.section.get("models", {}):
                for strategy in self.section.get("strategies", {}):
                    for seed in self.seeds():
                        yield dict(dataset=dataset, model=model, strategy=strategy, seed=seed)

    def hp(self, dataset: str, model: str, strategy: str, seed) -> dict:
        """The only config a detection or segmentation job depends on; editing anything else never reruns it."""
        return {"dataset": {"name": dataset, "size": self.size(dataset)}, "model": self.model_key(model),
                "strategy": self.strategy_entry(strategy), "training": self.training(model), "seed": int(seed)}

    def pretrain_entry(self, model: str, source: str) -> dict:
        """What pretraining depends on: the model, its weights entry and the training settings it inherits."""
        entry = self.model_entry(model)
        weights = self.weights_key(model)
        if weights.get("type") != "pretrain" or weights.get("dataset") != source:
            raise ValueError(f"{self.task}.models.{model} is not pretrained on '{source}'")
        keep = ("type", "cfg") if self.task == "detection" else ("encoder", "img_size")
        # what the weights entry sets (epochs always: declared in DENSE_WEIGHTS) replaces the task's setting,
        # which then must not rerun the pretraining when it changes
        training = self.training(model)
        training.pop("epochs", None)
        for own, task_key in (("lr", "lr0" if self.task == "detection" else "lr"), ("batch_size", "batch_size")):
            if weights.get(own) is not None:  # null: the task's own
                training.pop(task_key, None)
        return {"model": {"name": model, **{k: entry[k] for k in keep if k in entry}}, "weights": weights,
                "training": training, "dataset": {"name": source, "size": self.size(source)}}

    def report_settings(self) -> dict:
        from medtl.report.declaration import DENSE_REPORT

        return {**DENSE_REPORT.resolve(self.section.get("report"), f"{self.task}.report"),
                "models": list(self.section.get("models", {})), "strategies": list(self.section.get("strategies", {}))}


def dense_job_settings(hp: dict, task: str) -> dict:
    """A dense job's settings from its cache key (:meth:`DensePlan.hp`): the training settings and the strategy's
    settings restored in full. Idempotent."""
    from medtl.workflow.dense_config import training_settings

    spec = strategies_of(task).get(hp["strategy"]["type"])
    strategy = {**hp["strategy"], "settings": spec.settings.unkey(hp["strategy"].get("settings") or {})}
    return {**hp, "training": training_settings(task).unkey(hp.get("training") or {}), "strategy": strategy}
