"""The second study's SPFT tables and figure, with the published numbers side by side."""
from medtl.report.document import write_table_pages
from medtl.report.outputs import ReportFiles
from medtl.report.published import load_reference
from medtl.report.spft import build_spft_report
from medtl.workflow.script import job_log, param

with job_log(snakemake):
    order = param(snakemake, "order")
    files = ReportFiles.from_output("spft", snakemake.output)  # each file where the rule names it
    build_spft_report(list(map(str, snakemake.input.metrics)), files,
                      settings=param(snakemake, "settings"), reference=load_reference(snakemake.input.reference),
                      strategy_order=order["strategies"], arch_order=order["architectures"],
                      families=order["families"])
    write_table_pages(snakemake.output)  # the tables Snakemake's HTML report shows
    files.check_written()
