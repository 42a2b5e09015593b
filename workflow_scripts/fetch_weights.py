"""Starting weights that come from outside the pipeline: ImageNet, a Hugging Face hub checkpoint or a
user's checkpoint."""
from medtl.models.weights import fetch_hub, fetch_imagenet, import_checkpoint
from medtl.models.weights_declaration import weights_settings
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    weights = weights_settings(param(snakemake, "weights"))
    arch = param(snakemake, "arch")
    if weights["type"] == "imagenet":
        fetch_imagenet(arch, snakemake.output[0], snakemake.params.cache)
    elif weights["type"] == "hub":
        fetch_hub(arch, weights, snakemake.output[0], snakemake.params.cache)
    else:
        import_checkpoint(arch, weights["path"], snakemake.output[0])
