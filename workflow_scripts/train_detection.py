"""One (dataset, model, strategy, seed) detection job."""
from pathlib import Path

from medtl.detection.train import run
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    run(param(snakemake, "hp"), snakemake.input.data, str(Path(snakemake.input.store[0]).parent),
        str(Path(snakemake.output.metrics).parent), snakemake.params.checkpoint_dir, snakemake.params.config_dir,
        weights_file=next(iter(snakemake.input.weights), None), threads=snakemake.threads)
