"""The classification study as jobs, from the config alone (no PyTorch, no Snakemake): each section's entry as
a job sees it, the grid of training jobs, and each job's settings -- its cache key.

One cache-key rule for every job: its settings *resolved* (each strategy's, the ``training`` section's and the
``weights`` entry's declared defaults filled in) and then keyed by their declarations (``Settings.key``). A
changed declared default thus changes the key of exactly the jobs that use it, and Snakemake reruns them; a
setting added later with a ``neutral`` value (what jobs did without it) stays out of the keys at that value
unless the config writes it, so adding it reruns nothing. Jobs get the key and restore the settings
(:func:`job_settings`). Resources and paths are never in it.

``rules/*.smk`` call :class:`Plan` and keep only paths, input functions and rules.
"""
from __future__ import annotations

from typing import Iterator

from medtl.training.declaration import TRAINING

#: the training settings a pretraining job takes from the study's ``training`` section: its weights entry sets
#: the epochs and batch size, it never stops early and monitors the source's own metric
NOT_FOR_PRETRAINING = ("epochs", "batch_size", "patience", "monitor")


def lr_tag(lr) -> str:
    return f"{float(lr):g}"


def only(entry, key: str, default) -> list:
    """An entry's optional restriction list (architectures.<a>.datasets / .strategies,
    strategies.<s>.architectures); without one, everything."""
    return list((entry or {}).get(key) or default)


class Plan:
    """A parsed, validated config (after ``validate_config`` and ``check_config``)."""

    def __init__(self, config: dict):
        self.config = config

    # -- entries --------------------------------------------------------------------------------------
    def dataset_entry(self, name: str) -> dict:
        for section in ("datasets", "source_datasets"):
            if name in (self.config.get(section) or {}):
                entry = self.config[section][name] or {}  # an entry of {} or null: the registry's defaults
                return {"type": entry.get("type", name), **entry}
        raise ValueError(f"dataset '{name}' is in neither datasets nor source_datasets of the config")

    def arch_entry(self, name: str) -> dict:
        """The architecture as its jobs see it: its type, preprocessing and weights entry (keyed: the type's
        declared defaults filled in, ``medtl.models.weights_declaration``; a weights job restores it with
        ``weights_settings``)."""
        from medtl.models.spec import ARCHS
        from medtl.models.weights_declaration import resolve_weights, weights_key

        entry = self.config["architectures"][name] or {}
        arch_type = entry.get("type", name)
        preprocess = {**ARCHS.get(arch_type).default_preprocess, **entry.get("preprocess", {})}
        weights = resolve_weights(entry.get("weights"), f"architectures.{name}.weights")
        return {"key": name, "name": arch_type, "weights": weights_key(weights, entry.get("weights")),
                "preprocess": preprocess}

    def strategy_spec(self, name: str):
        from medtl.strategies import STRATEGIES

        return STRATEGIES.get((self.config["strategies"][name] or {}).get("type", name))

    def strategy_entry(self, name: str) -> dict:
        """The strategy as a job sees it: its type and its settings, resolved (declared defaults filled in) and
        keyed (``Settings.key``)."""
        from medtl.workflow.config import SELECTION_KEYS

        entry = self.config["strategies"][name] or {}
        spec = self.strategy_spec(name)
        settings = {k: v for k, v in entry.items() if k not in SELECTION_KEYS}
        resolved = spec.resolve(settings, f"strategies.{name}")
        return {"name": name, "type": entry.get("type", name), "settings": spec.settings.key(resolved, settings)}

    def training(self, arch: str | None = None, strategy: str | None = None) -> dict:
        """The ``training`` section resolved (declared defaults filled in), for ``arch``'s jobs (of ``strategy``):
        unless the config sets ``normalize``, an architecture with hub weights (RAD-DINO) normalises its inputs
        with the statistics its weights file carries (the owner's preprocessor_config.json), not ImageNet's."""
        resolved = TRAINING.resolve(self.config.get("training"), "training")
        if arch is not None and "normalize" not in (self.config.get("training") or {}):
            entry = self.run_arch_entry(arch, strategy) if strategy else self.arch_entry(arch)
            if entry["weights"]["type"] == "hub":
                resolved["normalize"] = "weights"
        return resolved

    def training_key(self, arch: str | None = None, strategy: str | None = None) -> dict:
        return TRAINING.key(self.training(arch, strategy), self.config.get("training"))

    def pretrain_training(self) -> dict:
        """The training settings pretraining uses (keyed): editing the fine-tuning-only ones reruns no
        pretraining."""
        return {k: v for k, v in self.training_key().items() if k not in NOT_FOR_PRETRAINING}

    def learning_rates(self, strategy: str) -> list:
        return (self.config["strategies"][strategy] or {}).get("learning_rates") or self.config["learning_rates"]

    # -- weights ------------------------------------------------------------------------------------------
    def from_scratch(self, strategy: str) -> bool:
        """Whether the strategy's jobs start from the architecture's random initialisation whatever its weights
        (``random_init`` in its declaration: scratch)."""
        return self.strategy_spec(strategy).random_init

    def weights_id(self, arch: str) -> str:
        w = self.arch_entry(arch)["weights"]
        return f"pretrain-{w['dataset']}" if w["type"] == "pretrain" else w["type"]

    def run_weights_id(self, arch: str, strategy: str) -> str:
        return "none" if self.from_scratch(strategy) else self.weights_id(arch)

    def run_arch_entry(self, arch: str, strategy: str) -> dict:
        """The architecture as a training job sees it: weights 'none' for a strategy that starts from scratch,
        so that the weights entry is not in such a job's cache key."""
        entry = self.arch_entry(arch)
        return {**entry, "weights": {"type": "none"}} if self.from_scratch(strategy) else entry

    def scratch_strategies(self) -> list[str]:
        return [s for s in self.config["strategies"] if self.from_scratch(s)]

    # -- cached features ---------------------------------------------------------------------------------
    def uses_features(self, strategy: str, arch: str) -> bool:
        """Whether a training job trains on cached backbone features: its strategy declares epochs on a frozen
        backbone for its settings (``frozen_backbone_when``: the one source, the job checks it agrees), the
        frozen blocks stay in eval mode, and the weights are fixed (with 'none' they are drawn per seed)."""
        from medtl.strategies import uses_frozen_features

        if self.run_weights_id(arch, strategy) == "none":
            return False
        spec = self.strategy_spec(strategy)
        settings = spec.settings.unkey(self.strategy_entry(strategy)["settings"])
        return uses_frozen_features(spec, settings, self.training(arch, strategy)["frozen_bn"])

    # -- the grid --------------------------------------------------------------------------------------
    def training_runs(self) -> Iterator[dict]:
        c = self.config
        for dataset in c["datasets"]:
            for arch, a in c["architectures"].items():
                if dataset not in only(a, "datasets", c["datasets"]):
                    continue
                for strategy, s in c["strategies"].items():
                    if strategy not in only(a, "strategies", c["strategies"]) or \
                            arch not in only(s, "architectures", c["architectures"]):
                        continue
                    for lr in self.learning_rates(strategy):
                        for seed in c["seeds"]:
                            yield dict(dataset=dataset, arch=arch, strategy=strategy, lr=lr_tag(lr), seed=seed)

    def train_hp(self, dataset: str, arch: str, strategy: str, lr, seed) -> dict:
        """The only config a training job depends on -- its cache key; editing anything else never reruns it."""
        entry = self.dataset_entry(dataset)
        return {
            "dataset": {"name": dataset, "metrics": entry.get("metrics"), "primary_metric": entry.get("primary_metric")},
            "arch": self.run_arch_entry(arch, strategy),  # weights 'none' for scratch
            "strategy": self.strategy_entry(strategy),
            "training": self.training_key(arch, strategy),
            "lr": float(lr),
            "seed": int(seed),
        }

    # -- reports ---------------------------------------------------------------------------------------
    def spft_strategies(self) -> list[str]:
        """Config names of the strategies of type 'spft' (variants included), in config order."""
        return [s for s, e in self.config["strategies"].items() if (e or {}).get("type", s) == "spft"]

    def spft_settings(self) -> dict:
        """Each SPFT variant's resolved settings."""
        return {s: self.strategy_spec(s).settings.unkey(self.strategy_entry(s)["settings"])
                for s in self.spft_strategies()}

    def arch_families(self) -> dict:
        from medtl.models.spec import ARCHS

        return {a: ARCHS.get(self.arch_entry(a)["name"]).family for a in self.config["architectures"]}

    def report_settings(self) -> dict:
        """The classification report's params: the ``report`` section, the config's order of strategies and
        architectures, each dataset's registry type (its default modality in the verdict) and, only where the
        config has one, the scratch strategies (a config without one keeps its report's params)."""
        scratch = self.scratch_strategies()
        from medtl.report.declaration import REPORT

        return {**REPORT.resolve(self.config.get("report"), "report"), "strategies": list(self.config["strategies"]),
                "architectures": list(self.config["architectures"]),
                "dataset_types": {ds: (self.config["datasets"].get(ds) or {}).get("type", ds)
                                  for ds in self.run_datasets()},
                **({"scratch": scratch} if scratch else {})}

    def fetch_entry(self, name: str) -> dict:
        """type and options for fetching. Sources that have files put there by hand (they declare a ``raw_data``
        option) also get the config's ``raw_data`` folder, unless their entry sets its own; other datasets' params
        stay as they were."""
        from medtl.data import DATASETS

        entry = {k: v for k, v in self.dataset_entry(name).items() if k in ("type", "options")}
        if "raw_data" in DATASETS.get(entry["type"]).options:
            entry["options"] = {"raw_data": self.config["raw_data"], **entry.get("options", {})}
        return entry

    def run_datasets(self) -> list[str]:
        """The datasets with training jobs, in config order."""
        return list(dict.fromkeys(r["dataset"] for r in self.training_runs()))


def job_settings(hp: dict) -> dict:
    """A training job's settings from its cache key (:meth:`Plan.train_hp`): the ``training`` section and the
    strategy's settings restored in full (what ``hparams.json`` records). Idempotent."""
    from medtl.strategies import STRATEGIES

    strategy = dict(hp["strategy"])
    spec = STRATEGIES.get(strategy["type"])
    strategy["settings"] = spec.settings.unkey(strategy.get("settings") or {})
    return {**hp, "training": TRAINING.unkey(hp.get("training") or {}), "strategy": strategy}
