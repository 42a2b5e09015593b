"""Config validation and the helpers every rule file uses."""
import json
import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

SCRIPTS = Path(workflow.basedir) / "workflow_scripts"
# Rule scripts and jobs on cluster nodes (which re-read this file) import the medtl package from here.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(SCRIPTS))

validate(config, str(Path(workflow.basedir) / "schemas" / "config.schema.yaml"), set_default=True)

from medtl.workflow.config import canonical, check_config  # noqa: E402

check_config(config)

RESULTS = config["results"]
REPORT = f"{RESULTS}/report"


def res(rule_kind, key, default):
    """Per-kind scheduler resources from the config's ``resources`` section."""
    return config["resources"].get(rule_kind, {}).get(key, default)


# -- config slices ------------------------------------------------------------------------------
def dataset_entry(name):
    entry = config["datasets"].get(name) or config["source_datasets"].get(name)
    if entry is None:
        raise ValueError(f"dataset '{name}' is in neither datasets nor source_datasets of the config")
    return {"type": entry.get("type", name), **entry}


def arch_entry(name):
    from medtl.models.spec import ARCHS

    entry = config["architectures"][name]
    arch_type = entry.get("type", name)
    preprocess = {**ARCHS.get(arch_type).default_preprocess, **entry.get("preprocess", {})}
    return {"key": name, "name": arch_type, "weights": entry.get("weights", {"type": "none"}),
            "preprocess": preprocess}


def strategy_entry(name):
    entry = dict(config["strategies"][name])
    entry.pop("learning_rates", None)
    entry.pop("architectures", None)
    return {"name": name, "type": entry.pop("type", name), "settings": entry}


def prep_tag(arch):
    p = arch_entry(arch)["preprocess"]
    return f"r{p['resize']}_c{p['crop']}"


def lr_tag(lr):
    return f"{float(lr):g}"


def learning_rates(strategy):
    return config["strategies"][strategy].get("learning_rates") or config["learning_rates"]


def weights_id(arch):
    w = arch_entry(arch)["weights"]
    if w["type"] == "pretrain":
        return f"pretrain-{w['dataset']}"
    return w["type"]


def weights_file(arch):
    wid = weights_id(arch)
    return [] if wid == "none" else f"{RESULTS}/weights/{arch}/{wid}.pt"


def store_files(dataset, prep):
    return multiext(f"{RESULTS}/prepared/{dataset}/{prep}/", "images.npy", "labels.csv", "meta.json")


# -- the grid of training jobs --------------------------------------------------------------------
RUN = "{dataset}/{arch}/{strategy}/lr{lr}/seed{seed}"


def only(entry, key, default):
    """An entry's optional restriction list (architectures.<a>.datasets / .strategies,
    strategies.<s>.architectures); without one, everything."""
    return (entry or {}).get(key) or list(default)


def training_runs():
    for dataset in config["datasets"]:
        for arch, a in config["architectures"].items():
            if dataset not in only(a, "datasets", config["datasets"]):
                continue
            for strategy, s in config["strategies"].items():
                if strategy not in only(a, "strategies", config["strategies"]) or \
                        arch not in only(s, "architectures", config["architectures"]):
                    continue
                for lr in learning_rates(strategy):
                    for seed in config["seeds"]:
                        yield dict(dataset=dataset, arch=arch, strategy=strategy, lr=lr_tag(lr), seed=seed)


def run_files(name):
    return [f"{RESULTS}/runs/{RUN.format(**r)}/{name}" for r in training_runs()]


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    arch=r"[A-Za-z0-9_.\-]+",  # dots: timm.<name>, torchvision.<name>
    strategy=r"[A-Za-z0-9_\-]+",
    prep=r"r\d+_c\d+",
    lr=r"[0-9.e\-+]+",
    seed=r"\d+",
