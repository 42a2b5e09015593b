"""One (dataset, architecture, strategy, learning rate, seed) training job."""
from pathlib import Path

from medtl.training.job import run
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    features = [f for f in snakemake.input.get("features", []) if str(f).endswith(".npy")]
    run(param(snakemake, "hp"), str(Path(snakemake.input.store[0]).parent),
        snakemake.input.weights or None, str(Path(snakemake.output.metrics).parent),
        snakemake.params.checkpoint, threads=snakemake.threads, features_file=features[0] if features else None)
