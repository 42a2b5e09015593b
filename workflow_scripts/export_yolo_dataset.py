"""Prepared detection store -> the YOLO-format folder Ultralytics trains on."""
from pathlib import Path

from medtl.detection import offline
from medtl.workflow.script import job_log

with job_log(snakemake):
    offline.prepare(snakemake.params.config_dir, snakemake.threads)
    from medtl.detection.export import export_yolo

    export_yolo(Path(snakemake.input[0]).parent, snakemake.output[0])
