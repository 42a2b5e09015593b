"""Backbone features of every image of one prepared store, for one (architecture, weights)."""
from pathlib import Path

from medtl.training.features import extract
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    training = snakemake.config.get("training", {})  # device and batch size: where and how, never what
    extract(param(snakemake, "spec"), str(Path(snakemake.input.store[0]).parent), snakemake.input.weights or None,
            snakemake.output.features, snakemake.output.meta, device=training.get("device", "auto"),
            batch_size=int(training.get("eval_batch_size", 256)), threads=snakemake.threads)
