"""One (dataset, model, strategy, seed) segmentation job (SAM with box prompts)."""
from pathlib import Path

from medtl.segmentation.train import run
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    run(param(snakemake, "hp"), str(Path(snakemake.input.store[0]).parent), str(Path(snakemake.output.metrics).parent),
        snakemake.params.checkpoint, weights_file=next(iter(snakemake.input.weights), None), threads=snakemake.threads)
