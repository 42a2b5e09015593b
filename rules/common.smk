"""Config validation and the helpers every rule file uses."""
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

SCRIPTS = Path(workflow.basedir) / "workflow_scripts"
# The rules (here and in jobs on cluster nodes, which re-read this file) import the medtl package from
# here; rule scripts find it without PYTHONPATH, since Snakemake puts the script's own folder (this one)
# and this process's sys.path on theirs, in a conda environment too.
sys.path.insert(0, str(SCRIPTS))

from medtl.workflow.config import canonical, check_config, check_writable, validate_config  # noqa: E402
from medtl.workflow.script import show_job_errors  # noqa: E402

# the schema's types, ranges and defaults, then what a schema cannot check; each problem in one line, no schema dump
validate_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")
check_config(config)
# a failed job's 'Error in rule' block shows its own message (the last line of its log), not 'message: None'
show_job_errors()


onstart:
    # a read-only results folder: one line naming it, not Snakemake's traceback when it clears a job's outputs
    check_writable(config["results"])

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


def pretrain_training():
    """The training settings pretraining uses: its weights entry sets the epochs and batch size, it never
    stops early and monitors the source's own metric, so editing those for fine-tuning reruns no pretraining."""
    return {k: v for k, v in config["training"].items() if k not in ("epochs", "batch_size", "patience", "monitor")}


def weights_id(arch):
    w = arch_entry(arch)["weights"]
    if w["type"] == "pretrain":
        return f"pretrain-{w['dataset']}"
    return w["type"]


def weights_file(arch):
    wid = weights_id(arch)
    return [] if wid == "none" else f"{RESULTS}/weights/{arch}/{wid}.pt"


# -- the weights a training job starts from ---------------------------------------------------------------
def from_scratch(strategy):
    """Whether the strategy's jobs start from the architecture's random initialisation whatever its weights
    (``random_init`` in its declaration: scratch, the reference that says whether transfer helps)."""
    from medtl.strategies import STRATEGIES

    return STRATEGIES.get(strategy_entry(strategy)["type"]).random_init


def run_arch_entry(arch, strategy):
    """The architecture as a training job sees it: its entry, with weights 'none' for a strategy that starts
    from scratch, so that the weights entry is not in such a job's cache key (editing it reruns none of them)."""
    entry = arch_entry(arch)
    return {**entry, "weights": {"type": "none"}} if from_scratch(strategy) else entry


def scratch_strategies():
    """Config names of the strategies that start from scratch (variants included), in config order: the reports
    show them beside the reference and test them against it, but rank them among no fine-tuning strategies."""
    return [s for s in config["strategies"] if from_scratch(s)]


def run_weights_id(arch, strategy):
    return "none" if from_scratch(strategy) else weights_id(arch)


def run_weights_file(arch, strategy):
    """The weights file a training job loads: none for a strategy that starts from scratch (nor does it wait
    for the architecture's pretraining or download)."""
    return [] if from_scratch(strategy) else weights_file(arch)


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


# -- datasets (rules/data.smk) ----------------------------------------------------------------------
def fetch_entry(name):
    """type and options for fetching. Sources that have files put there by hand (they declare a
    ``raw_data`` option) also get the config's ``raw_data`` folder, unless their entry sets its own;
    other datasets' params stay as they were, so adding this reruns nothing."""
    from medtl.data import DATASETS

    entry = {k: v for k, v in dataset_entry(name).items() if k in ("type", "options")}
    if "raw_data" in DATASETS.get(entry["type"]).options:
        entry["options"] = {"raw_data": config["raw_data"], **entry.get("options", {})}
    return entry


def preprocess_of(prep):
    resize, crop = prep[1:].split("_c")
    return {"resize": int(resize), "crop": int(crop)}


# -- cached features (rules/features.smk) -----------------------------------------------------------
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
    if run_weights_id(w.arch, w.strategy) == "none" or not strategy_freezes_backbone(w.strategy):
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


# -- training jobs (rules/train.smk) ----------------------------------------------------------------
def train_hp(w):
    """The only config a training job depends on; editing anything else never reruns it."""
    entry = dataset_entry(w.dataset)
    return {
        "dataset": {"name": w.dataset, "metrics": entry.get("metrics"), "primary_metric": entry.get("primary_metric")},
        "arch": run_arch_entry(w.arch, w.strategy),  # weights 'none' for scratch
        "strategy": strategy_entry(w.strategy),
        "training": config["training"],
        "lr": float(w.lr),
        "seed": int(w.seed),
    }


def train_inputs(w):
    # one input function, not one per input: Snakemake inspects each function of each of the 1,728 jobs
    return {
        "store": store_files(w.dataset, prep_tag(w.arch)),
        "weights": run_weights_file(w.arch, w.strategy),  # none for scratch
        "features": run_features(w),  # rules/features.smk: cached backbone features, for LP and LP-FT
    }


# -- the SPFT report (rules/report_spft.smk) --------------------------------------------------------
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


# -- the reports ----------------------------------------------------------------------------------------
def run_datasets():
    """The datasets with training jobs, in config order: one table, interval table and figures each."""
    return list(dict.fromkeys(r["dataset"] for r in training_runs()))


def captions(report_name):
    """The captions of one report (report/<report_name>/*.rst). Snakemake's HTML report shows them beside the
    results, and the report's report.md quotes them: as inputs, editing one rebuilds the report.md."""
    return sorted(str(p) for p in (Path(workflow.basedir) / "report" / report_name).glob("*.rst"))
