"""Decode, resize and crop one dataset once into the prepared store."""
from pathlib import Path

from medtl.data.prepare import prepare
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    prep = param(snakemake, "preprocess")
    prepare(snakemake.wildcards.dataset, param(snakemake, "entry"), snakemake.input.manifest,
            prep["resize"], prep["crop"], str(Path(snakemake.output[0]).parent))
