"""Backbone features of every image of one prepared store, for one (architecture, weights)."""
from pathlib import Path

from medtl.training.declaration import TRAINING
from medtl.training.features import extract
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    # device and batch size: where and how, never what (not in the job's params)
    training = TRAINING.resolve(snakemake.config.get("training"), "training")
    extract(param(snakemake, "spec"), str(Path(snakemake.input.store[0]).parent), snakemake.input.weights or None,
            snakemake.output.features, snakemake.output.meta, device=training["device"],
            batch_size=int(training["eval_batch_size"]), threads=snakemake.threads)
