"""Pretrain a detector on a source dataset of the pipeline (its YOLO folder)."""
from medtl.detection.train import pretrain
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    e = param(snakemake, "entry")
    pretrain(e["model"], e["weights"], e["training"], e["dataset"], snakemake.input.data, snakemake.output[0],
             snakemake.params.checkpoint_dir, snakemake.params.config_dir, threads=snakemake.threads)
