"""Merge every training job's metrics into the study's tables and figures."""
from medtl.report.classification import build_report
from medtl.report.document import write_table_pages
from medtl.report.outputs import ReportFiles
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    settings = param(snakemake, "report")
    files = ReportFiles.from_output("classification", snakemake.output)  # each file where the rule names it
    build_report(list(map(str, snakemake.input.metrics)), files,
                 reference=settings["reference"], threshold=settings["effective_threshold"],
                 strategy_order=settings["strategies"], arch_order=settings["architectures"], stats=settings,
                 scratch=settings.get("scratch"))
    write_table_pages(snakemake.output)  # the tables Snakemake's HTML report shows
    files.check_written()
