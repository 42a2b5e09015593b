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


# -- config slices: medtl.workflow.plan computes them (unit-tested there); these names keep the rules short --
from medtl.workflow.plan import Plan, lr_tag, only  # noqa: E402
from medtl.report.outputs import DATASET, STUDIES  # noqa: E402

PLAN = Plan(config)
dataset_entry = PLAN.dataset_entry
arch_entry = PLAN.arch_entry
strategy_entry = PLAN.strategy_entry
learning_rates = PLAN.learning_rates
pretrain_training = PLAN.pretrain_training
weights_id = PLAN.weights_id


def prep_tag(arch):
    p = arch_entry(arch)["preprocess"]
    return f"r{p['resize']}_c{p['crop']}"


def weights_file(arch):
    wid = weights_id(arch)
    return [] if wid == "none" else f"{RESULTS}/weights/{arch}/{wid}.pt"


# -- the weights a training job starts from ---------------------------------------------------------------
from_scratch = PLAN.from_scratch
run_arch_entry = PLAN.run_arch_entry
scratch_strategies = PLAN.scratch_strategies
run_weights_id = PLAN.run_weights_id


def run_weights_file(arch, strategy):
    """The weights file a training job loads: none for a strategy that starts from scratch (nor does it wait
    for the architecture's pretraining or download)."""
    return [] if from_scratch(strategy) else weights_file(arch)


def store_files(dataset, prep):
    return multiext(f"{RESULTS}/prepared/{dataset}/{prep}/", "images.npy", "labels.csv", "meta.json")


# -- the grid of training jobs --------------------------------------------------------------------
RUN = "{dataset}/{arch}/{strategy}/lr{lr}/seed{seed}"


training_runs = PLAN.training_runs


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
fetch_entry = PLAN.fetch_entry


def preprocess_of(prep):
    resize, crop = prep[1:].split("_c")
    return {"resize": int(resize), "crop": int(crop)}


# -- cached features (rules/features.smk) -----------------------------------------------------------
def features_files(dataset, arch):
    return multiext(f"{RESULTS}/features/{dataset}/{arch}/{weights_id(arch)}", ".npy", ".json")


def run_features(w):
    """The train rule's ``features`` input: cached features when the strategy has frozen-backbone
    epochs and the weights are fixed (with weights 'none' the backbone is random, drawn per seed)."""
    if not PLAN.uses_features(w.strategy, w.arch):
        return []
    return features_files(w.dataset, w.arch)


def features_spec(w):
    """Everything the features depend on besides the store; checked again by the jobs that load them."""
    from medtl.training.spec import describe

    if w.weights != weights_id(w.arch):
        raise ValueError(f"features of {w.arch} exist only for its configured weights '{weights_id(w.arch)}', "
                         f"not '{w.weights}'")
    entry = arch_entry(w.arch)
    return describe(entry["name"], entry["weights"], PLAN.training(w.arch)["normalize"])


# -- training jobs (rules/train.smk) ----------------------------------------------------------------
def train_hp(w):
    """The only config a training job depends on (its cache key: medtl.workflow.plan)."""
    return PLAN.train_hp(w.dataset, w.arch, w.strategy, w.lr, w.seed)


def train_inputs(w):
    # one input function, not one per input: Snakemake inspects each function of each of the 1,728 jobs
    return {
        "store": store_files(w.dataset, prep_tag(w.arch)),
        "weights": run_weights_file(w.arch, w.strategy),  # none for scratch
        "features": run_features(w),  # rules/features.smk: cached backbone features, for LP and LP-FT
    }


# -- the SPFT report (rules/report_spft.smk) --------------------------------------------------------
REFERENCE_FILE = str(Path(workflow.basedir) / "references" / "published.yaml")


spft_strategies = PLAN.spft_strategies
spft_settings = PLAN.spft_settings


def spft_metric_files():
    names = set(spft_strategies())
    return [f"{RESULTS}/runs/{RUN.format(**r)}/metrics.json" for r in training_runs() if r["strategy"] in names]


arch_families = PLAN.arch_families


# -- the reports ----------------------------------------------------------------------------------------
run_datasets = PLAN.run_datasets


def report_outputs(study, datasets=()):
    """A report rule's outputs, as medtl/report/outputs.py declares them: the files under results/report/<study>/,
    each shown one wrapped in Snakemake's report() with its caption (report/<study>/<caption>.rst)."""
    declared = STUDIES[study]

    def one(rel, out, dataset=None):
        path = f"{REPORT}/{study}/{rel}"
        if not out.caption:
            return path
        return report(path, caption=f"../report/{study}/{out.caption}.rst", category=declared.category,
                      subcategory=out.subcategory, labels=out.labels(dataset))

    outputs = {}
    for out in declared.outputs:
        if out.per_dataset:
            outputs[out.name] = [one(p.replace(DATASET, ds), out, ds) for ds in datasets for p in out.paths]
        else:
            outputs[out.name] = one(out.paths[0], out) if len(out.paths) == 1 else [one(p, out) for p in out.paths]
    return outputs


def captions(study):
    """The captions of one report (report/<study>/<caption>.rst, as medtl/report/outputs.py attaches them).
    Snakemake's HTML report shows them beside the results, and the report's report.md quotes them: as inputs,
    editing one rebuilds the report.md."""
    return [str(Path(workflow.basedir) / "report" / study / f"{name}.rst") for name in STUDIES[study].captions()]