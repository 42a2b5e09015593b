"""Helpers of the optional dense tasks (detection, segmentation): config slices, paths and targets.
Each task has its own raw and prepared folders, so the same source may be configured differently for each."""
from medtl.dense_weights import weights_file as dense_weights_path  # noqa: E402
from medtl.workflow.dense_config import check_dense_config  # noqa: E402
from medtl.workflow.dense_plan import DensePlan  # noqa: E402

check_dense_config(config)

DENSE_RUN = "{dataset}/{model}/{strategy}/seed{seed}"
# the config slices of each task: medtl.workflow.dense_plan computes them (unit-tested there)
DENSE_PLANS = {task: DensePlan(config, task) for task in ("detection", "segmentation")}


def dense_section(task):
    return DENSE_PLANS[task].section


def dense_entry(task, name):
    return DENSE_PLANS[task].entry(name)


def dense_size(task, name):
    return DENSE_PLANS[task].size(name)


def dense_model_entry(task, model):
    return DENSE_PLANS[task].model_entry(model)


def dense_weights_file(task, model):
    """The starting weights of a model's jobs: a file to make (pretrain, release) or given (checkpoint), or none."""
    path = dense_weights_path(RESULTS, task, model, dense_model_entry(task, model))
    return [path] if path else []


def dense_store_dir(task, dataset):
    return f"{RESULTS}/{task}/prepared/{dataset}/s{dense_size(task, dataset)}"


def dense_runs(task):
    return DENSE_PLANS[task].runs()


def dense_run_files(task, name):
    return [f"{RESULTS}/{task}/runs/{DENSE_RUN.format(**r)}/{name}" for r in dense_runs(task)]


def dense_fetch_entry(task, name):
    return DENSE_PLANS[task].fetch_entry(name)


def dense_prepare_entry(task, dataset):
    return DENSE_PLANS[task].prepare_entry(dataset)


def dense_report_settings(task):
    return DENSE_PLANS[task].report_settings()


# -- starting weights (rules/dense_weights.smk) ----------------------------------------------------
def dense_pretrain_entry(task, model, source):
    return DENSE_PLANS[task].pretrain_entry(model, source)


# -- detection (rules/detection.smk) ----------------------------------------------------------------
ULTRALYTICS_CONFIG = f"{RESULTS}/cache/ultralytics"  # settings and fonts: inside the results, never in ~


def detection_hp(w):
    """The only config a detection job depends on (its cache key: medtl.workflow.dense_plan)."""
    return DENSE_PLANS["detection"].hp(w.dataset, w.model, w.strategy, w.seed)


def detection_store(dataset):
    return multiext(f"{dense_store_dir('detection', dataset)}/", "images.npy", "labels.csv", "boxes.csv", "meta.json")


def detection_targets():
    """The report's tables and figures, or nothing when the config has no detection section."""
    if not dense_section("detection"):
        return []
    return [f"{REPORT}/detection/detection_table.md", f"{REPORT}/detection/report.md",
            *(f"{REPORT}/detection/figures/boxes_{ds}.png" for ds in dense_section("detection")["datasets"])]


# -- segmentation (rules/segmentation.smk) ----------------------------------------------------------
def segmentation_hp(w):
    """The only config a segmentation job depends on (its cache key: medtl.workflow.dense_plan)."""
    return DENSE_PLANS["segmentation"].hp(w.dataset, w.model, w.strategy, w.seed)


def segmentation_store(dataset):
    return multiext(f"{dense_store_dir('segmentation', dataset)}/", "images.npy", "labels.csv", "masks.npy",
                    "meta.json")


def segmentation_targets():
    """The report's tables and figures, or nothing when the config has no segmentation section."""
    if not dense_section("segmentation"):
        return []
    return [f"{REPORT}/segmentation/segmentation_table.md", f"{REPORT}/segmentation/report.md",
            *(f"{REPORT}/segmentation/figures/masks_{ds}.png" for ds in dense_section("segmentation")["datasets"])]
