"""Obtain one dense dataset's raw files (generate or locate) and write its manifest."""
from pathlib import Path

from medtl.data import DENSE_DATASETS
from medtl.io import write_json
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    entry = param(snakemake, "entry")
    spec = DENSE_DATASETS.get(entry["type"])
    manifest = spec.fetch(Path(snakemake.params.raw_dir), {**spec.options, **entry.get("options", {})})
    write_json(snakemake.output.manifest, manifest)
