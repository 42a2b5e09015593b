"""A dense model's released checkpoint (Ultralytics .pt, SAM .pth), fetched once and checked."""
from medtl.dense_weights import fetch_release
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    if snakemake.wildcards.task == "detection":
        from medtl.detection import offline

        offline.prepare(snakemake.params.config_dir)  # unpickling the checkpoint imports Ultralytics
    fetch_release(snakemake.wildcards.task, param(snakemake, "entry"), snakemake.output[0], snakemake.params.cache)
