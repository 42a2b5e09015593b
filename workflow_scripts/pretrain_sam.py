"""Pretrain SAM on a source dataset of the pipeline (its segmentation store)."""
from pathlib import Path

from medtl.segmentation.train import pretrain
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    e = param(snakemake, "entry")
    pretrain(e["model"], e["weights"], e["training"], str(Path(snakemake.input.store[0]).parent),
             snakemake.output[0], snakemake.params.checkpoint, threads=snakemake.threads)
