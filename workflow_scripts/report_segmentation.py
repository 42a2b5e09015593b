"""Merge every segmentation job into the Dice tables and mask overlay figures."""
from medtl.report.document import write_table_pages
from medtl.report.outputs import ReportFiles
from medtl.segmentation.report import build_report
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    settings = param(snakemake, "report")
    files = ReportFiles.from_output("segmentation", snakemake.output)  # each file where the rule names it
    build_report(list(map(str, snakemake.input.metrics)), list(map(str, snakemake.input.predictions)),
                 list(map(str, snakemake.input.per_image)), param(snakemake, "stores"), files,
                 model_order=settings["models"], strategy_order=settings["strategies"],
                 n_images=settings["n_images"])
    write_table_pages(snakemake.output)  # the tables Snakemake's HTML report shows
    files.check_written()
