"""Pretrain one architecture on a source dataset of the pipeline."""
from pathlib import Path

from medtl.pretrain import pretrain
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    pretrain(param(snakemake, "arch"), param(snakemake, "weights"), param(snakemake, "training"),
             str(Path(snakemake.input[0]).parent), snakemake.output[0], snakemake.params.checkpoint,
             threads=snakemake.threads)
