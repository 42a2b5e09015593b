"""Decode, letterbox and annotate one dense dataset once into the prepared dense store."""
from pathlib import Path

from medtl.data.dense_prepare import prepare_dense
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    prepare_dense(snakemake.wildcards.dataset, snakemake.params.task, param(snakemake, "entry"),
                  snakemake.input.manifest, int(snakemake.wildcards.size), str(Path(snakemake.output[0]).parent))
