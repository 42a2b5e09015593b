"""Every result of the run next to the published number of the same setting, where there is one."""
from medtl.report.document import write_table_pages
from medtl.report.outputs import ReportFiles
from medtl.report.published import build_published_report, load_reference
from medtl.workflow.script import job_log

with job_log(snakemake):
    files = ReportFiles.from_output("published", snakemake.output)  # each file where the rule names it
    build_published_report(list(map(str, snakemake.input.metrics)), load_reference(snakemake.input.reference),
                           files, intervals=snakemake.input.get("intervals"))
    write_table_pages(snakemake.output)  # the tables Snakemake's HTML report shows
    files.check_written()
