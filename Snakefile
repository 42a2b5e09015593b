# Transfer learning in medical imaging: every (dataset, architecture, strategy,
# learning rate, seed) is one cacheable job; tables and figures come from one command.
# The embedded default; a --configfile on the command line replaces it instead of being merged into it
# (merged, `--configfile configs/paper.yaml` would also run the demo's datasets, architectures and strategies).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# snakemake --report report.html: every table and figure with its caption (report/<report>/*.rst), by task and study
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/common_dense.smk"
include: "rules/data.smk"
include: "rules/weights.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/report.smk"
include: "rules/report_published.smk"
include: "rules/report_spft.smk"
include: "rules/dense_data.smk"
include: "rules/detection.smk"
include: "rules/segmentation.smk"
include: "rules/dense_weights.smk"


# classification and its published numbers, only when the config has classification training jobs
CLASSIFICATION_REPORTS = [*rules.report_classification.output, *rules.report_published.output] if any(training_runs()) else []


rule all:
    input:
        CLASSIFICATION_REPORTS,
        SPFT_REPORT,  # the SPFT tables, only when the config has SPFT-type strategies
        detection_targets(),  # detection and segmentation tables and figures, only when configured
        segmentation_targets(),
        REPORT_RUN_INPUTS,  # every job's files the reports read: a deleted one reruns its job (rules/report.smk)
    default_target: True
