"""One (dataset, architecture, strategy, learning rate, seed) training job."""
from pathlib import Path

from medtl.training.job import run
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    run(param(snakemake, "hp"), str(Path(snakemake.input.store[0]).parent),
        snakemake.input.weights or None, str(Path(snakemake.output.metrics).parent),
        snakemake.params.checkpoint, threads=snakemake.threads)
