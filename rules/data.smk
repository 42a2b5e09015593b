"""Datasets: fetched (downloaded, generated or located) once, then prepared once per preprocessing."""


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


rule fetch_dataset:
    output:
        manifest=f"{RESULTS}/raw/{{dataset}}/manifest.json",
    params:
        entry=lambda w: canonical(fetch_entry(w.dataset)),
        raw_dir=lambda w: f"{RESULTS}/raw/{w.dataset}",
    log:
        f"{RESULTS}/logs/fetch_dataset/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_dataset/{{dataset}}.tsv"
    localrule: True
    script:
        "../workflow_scripts/fetch_dataset.py"


rule prepare_dataset:
    input:
        manifest=rules.fetch_dataset.output.manifest,
    output:
        store_files("{dataset}", "{prep}"),
    params:
        entry=lambda w: canonical({k: v for k, v in dataset_entry(w.dataset).items()
                                   if k in ("type", "options", "val_fraction", "split_seed")}),
        preprocess=lambda w: canonical(preprocess_of(w.prep)),
    log:
        f"{RESULTS}/logs/prepare_dataset/{{dataset}}_{{prep}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_dataset/{{dataset}}_{{prep}}.tsv"
    resources:
        mem_mb=res("prepare", "mem_mb", 4000),
        runtime=res("prepare", "runtime", 120),
    script:
        "../workflow_scripts/prepare_dataset.py"
