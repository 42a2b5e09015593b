"""Detection (config section ``detection``, optional): prepared store -> YOLO folder -> one
Ultralytics job per (dataset, model, strategy, seed) -> comparison tables and box figures."""


rule prepare_detection_dataset:
    input:
        manifest=f"{RESULTS}/detection/raw/{{dataset}}/manifest.json",
    output:
        multiext(f"{RESULTS}/detection/prepared/{{dataset}}/s{{size}}/", "images.npy", "labels.csv", "boxes.csv",
                 "meta.json"),
    wildcard_constraints:
        size=r"\d+",
    params:
        entry=lambda w: canonical(dense_prepare_entry("detection", w.dataset)),
        task="detection",
    log:
        f"{RESULTS}/logs/prepare_detection_dataset/{{dataset}}_s{{size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_detection_dataset/{{dataset}}_s{{size}}.tsv"
    resources:
        mem_mb=res("prepare", "mem_mb", 4000),
        runtime=res("prepare", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/prepare_dense_dataset.py"


rule export_yolo_dataset:
    input:
        multiext(f"{RESULTS}/detection/prepared/{{dataset}}/s{{size}}/", "images.npy", "labels.csv", "boxes.csv",
                 "meta.json"),
    output:
        directory(f"{RESULTS}/detection/yolo/{{dataset}}/s{{size}}"),
    wildcard_constraints:
        size=r"\d+",
    params:
        config_dir=ULTRALYTICS_CONFIG,
    log:
        f"{RESULTS}/logs/export_yolo_dataset/{{dataset}}_s{{size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/export_yolo_dataset/{{dataset}}_s{{size}}.tsv"
    resources:
        mem_mb=res("prepare", "mem_mb", 4000),
        runtime=res("prepare", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/export_yolo_dataset.py"


rule train_detection:
    input:
        data=lambda w: f"{RESULTS}/detection/yolo/{w.dataset}/s{dense_size('detection', w.dataset)}",
        store=lambda w: detection_store(w.dataset),
        weights=lambda w: dense_weights_file("detection", w.model),
    output:
        metrics=f"{RESULTS}/detection/runs/{DENSE_RUN}/metrics.json",
        predictions=f"{RESULTS}/detection/runs/{DENSE_RUN}/predictions.csv",
        history=f"{RESULTS}/detection/runs/{DENSE_RUN}/history.csv",
        hparams=f"{RESULTS}/detection/runs/{DENSE_RUN}/hparams.json",
    wildcard_constraints:
        model=r"[A-Za-z0-9_\-]+",
    params:
        hp=lambda w: canonical(detection_hp(w)),
        checkpoint_dir=lambda w: f"{RESULTS}/checkpoints/detection/{DENSE_RUN.format(**w)}",
        config_dir=ULTRALYTICS_CONFIG,
    log:
        f"{RESULTS}/logs/train_detection/{DENSE_RUN}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_detection/{DENSE_RUN}.tsv"
    threads: res("detection", "threads", 1)
    resources:
        gpu=res("detection", "gpu", 0),
        mem_mb=res("detection", "mem_mb", 4000),
        runtime=res("detection", "runtime", 120),
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/train_detection.py"


rule report_detection:
    input:
        metrics=dense_run_files("detection", "metrics.json"),
        predictions=dense_run_files("detection", "predictions.csv"),
        stores=[detection_store(ds) for ds in dense_section("detection").get("datasets", {})],
        captions=captions("detection"),
    output:
        **report_outputs("detection", dense_section("detection").get("datasets", {})),
    params:
        report=canonical(dense_report_settings("detection")),
        stores=canonical({ds: dense_store_dir("detection", ds)
                          for ds in dense_section("detection").get("datasets", {})}),
    log:
        f"{RESULTS}/logs/report_detection.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_detection.tsv"
    localrule: True
    conda:
        "../envs/medtl.yaml"
    script:
        "../workflow_scripts/report_detection.py"
