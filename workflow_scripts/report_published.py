"""Every result of the run next to the published number of the same setting, where there is one."""
from medtl.report.document import write_table_pages
from medtl.report.published import build_published_report, load_reference
from medtl.workflow.script import job_log

with job_log(snakemake):
    build_published_report(list(map(str, snakemake.input.metrics)), load_reference(snakemake.input.reference),
                           snakemake.params.out_dir, intervals=snakemake.input.get("intervals"))
    write_table_pages(snakemake.output)  # the tables Snakemake's HTML report shows
