"""Helpers of the optional dense tasks (detection, segmentation): config slices, paths and targets.
Each task has its own raw and prepared folders, so the same source may be configured differently for each."""
from medtl.dense_weights import weights_file as dense_weights_path  # noqa: E402
from medtl.workflow.dense_config import check_dense_config  # noqa: E402

check_dense_config(config)

DENSE_DEFAULT_SIZE = {"detection": 640, "segmentation": 1024}
DENSE_RUN = "{dataset}/{model}/{strategy}/seed{seed}"


# -- both tasks (rules/dense_data.smk) --------------------------------------------------------------
def dense_section(task):
    return config.get(task) or {}


def dense_entry(task, name):
    """A dataset of the task: one it trains and tests on, or a source it pretrains on."""
    section = dense_section(task)
    datasets = section.get("datasets") or {}
    entry = (datasets[name] if name in datasets else (section.get("source_datasets") or {})[name]) or {}
    return {"type": entry.get("type", name), **entry}


def dense_size(task, name):
    return int(dense_entry(task, name).get("size") or DENSE_DEFAULT_SIZE[task])


def dense_seeds(task):
    return dense_section(task).get("seeds") or config["seeds"]


def dense_strategy_entry(task, name):
    entry = dict(dense_section(task)["strategies"][name] or {})
    return {"name": name, "type": entry.pop("type", name), "settings": entry}


def dense_training(task, model):
    """The task's training settings with the model's own overrides on top."""
    entry = dense_section(task)["models"][model] or {}
    return {**dense_section(task).get("training", {}), **(entry.get("training") or {})}


def dense_model_entry(task, model):
    return dense_section(task)["models"][model] or {}


def dense_weights_file(task, model):
    """The starting weights of a model's jobs: a file to make (pretrain, release) or given (checkpoint), or none."""
    path = dense_weights_path(RESULTS, task, model, dense_model_entry(task, model))
    return [path] if path else []


def dense_store_dir(task, dataset):
    return f"{RESULTS}/{task}/prepared/{dataset}/s{dense_size(task, dataset)}"


def dense_runs(task):
    section = dense_section(task)
    for dataset in section.get("datasets", {}):
        for model in section.get("models", {}):
            for strategy in section.get("strategies", {}):
                for seed in dense_seeds(task):
                    yield dict(dataset=dataset, model=model, strategy=strategy, seed=seed)


def dense_run_files(task, name):
    return [f"{RESULTS}/{task}/runs/{DENSE_RUN.format(**r)}/{name}" for r in dense_runs(task)]


def dense_fetch_entry(task, name):
    """type and options for fetching; sources with files put there by hand (they declare a
    ``raw_data`` option) also get the config's ``raw_data`` folder, as in ``fetch_entry``."""
    from medtl.data import DENSE_DATASETS

    entry = {k: v for k, v in dense_entry(task, name).items() if k in ("type", "options")}
    if "raw_data" in DENSE_DATASETS.get(entry["type"]).options:
        entry["options"] = {"raw_data": config["raw_data"], **(entry.get("options") or {})}
    return entry


def dense_prepare_entry(task, dataset):
    """What a prepared store depends on: the source and its options, and how validation is carved."""
    entry = dense_entry(task, dataset)
    return {k: v for k, v in entry.items() if k in ("type", "options", "val_fraction", "split_seed")}


DENSE_REPORT_DEFAULTS = {"n_images": 4, "box_conf": 0.05}


def dense_report_settings(task):
    section = dense_section(task)
    return {**DENSE_REPORT_DEFAULTS, **(section.get("report") or {}), "models": list(section.get("models", {})),
            "strategies": list(section.get("strategies", {}))}


# -- starting weights (rules/dense_weights.smk) ----------------------------------------------------
def dense_pretrain_entry(task, model, source):
    """What pretraining depends on: the model, its weights entry and the training settings it inherits."""
    entry = dense_model_entry(task, model)
    weights = dict(entry.get("weights") or {})
    if weights.get("type") != "pretrain" or weights.get("dataset") != source:
        raise ValueError(f"{task}.models.{model} is not pretrained on '{source}'")
    keep = ("type", "cfg") if task == "detection" else ("encoder", "img_size")
    # what the weights entry sets (epochs always: 5 by default) replaces the task's setting, which then
    # must not rerun the pretraining when it changes
    training = dense_training(task, model)
    training.pop("epochs", None)
    for own, task_key in (("lr", "lr0" if task == "detection" else "lr"), ("batch_size", "batch_size")):
        if own in weights:
            training.pop(task_key, None)
    return {"model": {"name": model, **{k: entry[k] for k in keep if k in entry}}, "weights": weights,
            "training": training,
            "dataset": {"name": source, "size": dense_size(task, source)}}


# -- detection (rules/detection.smk) ----------------------------------------------------------------
ULTRALYTICS_CONFIG = f"{RESULTS}/cache/ultralytics"  # settings and fonts: inside the results, never in ~


def detection_hp(w):
    """The only config a detection job depends on; editing anything else never reruns it."""
    entry = dense_section("detection")["models"][w.model] or {}
    return {
        "dataset": {"name": w.dataset, "size": dense_size("detection", w.dataset)},
        "model": {"name": w.model, "type": entry.get("type", w.model), "cfg": entry.get("cfg"),
                  "weights": entry.get("weights") or {"type": "none"}},
        "strategy": dense_strategy_entry("detection", w.strategy),
        "training": dense_training("detection", w.model),
        "seed": int(w.seed),
    }


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
    """The only config a segmentation job depends on; editing anything else never reruns it."""
    entry = dense_section("segmentation")["models"][w.model] or {}
    return {
        "dataset": {"name": w.dataset, "size": dense_size("segmentation", w.dataset)},
        "model": {"name": w.model, "encoder": entry.get("encoder", "vit_b"), "img_size": entry.get("img_size", 1024),
                  "weights": entry.get("weights") or {"type": "none"}},
        "strategy": dense_strategy_entry("segmentation", w.strategy),
        "training": dense_training("segmentation", w.model),
        "seed": int(w.seed),
    }


def segmentation_store(dataset):
    return multiext(f"{dense_store_dir('segmentation', dataset)}/", "images.npy", "labels.csv", "masks.npy",
                    "meta.json")


def segmentation_targets():
    """The report's tables and figures, or nothing when the config has no segmentation section."""
    if not dense_section("segmentation"):
        return []
    return [f"{REPORT}/segmentation/segmentation_table.md", f"{REPORT}/segmentation/report.md",
            *(f"{REPORT}/segmentation/figures/masks_{ds}.png" for ds in dense_section("segmentation")["datasets"])]
