# Transfer learning in medical imaging: every (dataset, architecture, strategy,
# learning rate, seed) is one cacheable job; tables and figures come from one command.
configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/weights.smk"
include: "rules/train.smk"
include: "rules/report.smk"


rule all:
    input:
        rules.report_classification.output,
    default_target: True
