"""The report contract (medtl.report.outputs): each report's files are declared once; the rules take their
outputs from it, the writers write to the paths a rule names, and Snakemake's HTML report shows the declared
captions. The whole workflow's side (every file a finished run's report rules declare, against the disk) is
tests/test_report_html.py::test_every_report_rule_declares_exactly_the_files_its_writer_writes."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from snakemake.iocontainers import Namedlist

from medtl.report import outputs as O
from medtl.report.published import build_published_report, load_reference
from test_paper_tables import REFERENCE_FILE, _metrics_files
from workflow_helpers import REPO


def rule_output(study: str, root: Path, datasets=("d1", "d2"), renamed: dict | None = None) -> Namedlist:
    """A report rule's ``snakemake.output`` as Snakemake hands it to the script, from the outputs
    rules/common.smk's report_outputs names (a list output flattened, its name on the slice)."""
    out = Namedlist()
    for o in O.STUDIES[study].outputs:
        files = [str(root / study / (renamed or {}).get(rel, rel)) for rel in o.files(list(datasets))]
        start = len(out)
        out.extend(files)
        out._set_name(o.name, start, len(out) if o.per_dataset or len(o.paths) > 1 else None)
    return out


@pytest.mark.parametrize("study", sorted(O.STUDIES))
def test_every_caption_is_declared_once_and_every_declared_one_exists(study):
    folder = REPO / "report" / study
    on_disk = sorted(p.stem for p in folder.glob("*.rst"))
    assert O.STUDIES[study].captions() == on_disk, "a caption file no output shows, or an output without its file"
    names = [o.name for o in O.STUDIES[study].outputs]
    assert len(names) == len(set(names)), "an output name twice"


@pytest.mark.parametrize("study", sorted(O.STUDIES))
def test_the_rule_s_paths_map_back_to_the_declared_files(study, tmp_path):
    output = rule_output(study, tmp_path / "results" / "report")
    files = O.ReportFiles.from_output(study, output)
    for o in O.STUDIES[study].outputs:
        for rel in o.files(["d1", "d2"]):
            assert files(rel) == tmp_path / "results" / "report" / study / rel
    with pytest.raises(ValueError, match=rf"the {study} report writes 'undeclared.csv', which its rule does not declare"):
        files("undeclared.csv")


def test_the_published_writer_writes_where_the_rule_says_and_only_what_it_declares(tmp_path, monkeypatch):
    metrics = _metrics_files(tmp_path / "runs")
    reference = load_reference(REFERENCE_FILE)
    # the rule's paths, not a folder the writer picks: here in a folder of another name
    output = rule_output("published", tmp_path / "elsewhere")
    files = O.ReportFiles.from_output("published", output)
    written = build_published_report(metrics, reference, files)
    assert set(written) == {"side_by_side.md", "side_by_side.csv", "recount_table11.csv", "recount_table12.csv"}
    assert all(Path(p).is_file() and Path(p).is_relative_to(tmp_path / "elsewhere") for p in written.values())
    with pytest.raises(RuntimeError, match=r"did not write: side_by_side\.html"):
        files.check_written()  # the page is write_table_pages' (the rule script's next step)
    Path(output.page).write_text("<html></html>")
    files.check_written()
    # a declaration without one of the files: the writer stops at that file, naming it
    study = O.STUDIES["published"]
    fewer = dataclasses.replace(study, outputs=tuple(o for o in study.outputs if o.name != "recount_table12"))
    monkeypatch.setitem(O.STUDIES, "published", fewer)
    with pytest.raises(ValueError, match="writes 'recount_table12.csv', which its rule does not declare"):
        build_published_report(metrics, reference, tmp_path / "folder")


def test_a_rule_output_that_ends_in_no_declared_file_is_named(tmp_path):
    output = rule_output("published", tmp_path, renamed={"side_by_side.md": "renamed.md"})
    with pytest.raises(ValueError, match=r"output 'summary' of the published report's rule is .*renamed\.md"):
        O.ReportFiles.from_output("published", output)


def test_a_file_asked_for_but_never_written_is_named(tmp_path):
    files = O.ReportFiles.from_output("published", rule_output("published", tmp_path))
    for rel in ("side_by_side.md", "side_by_side.html", "side_by_side.csv", "recount_table11.csv"):
        files(rel).parent.mkdir(parents=True, exist_ok=True)
        files(rel).write_text("x")
    files("recount_table12.csv")  # a writer that asks for the path and then writes nothing
    with pytest.raises(RuntimeError, match=r"did not write: recount_table12\.csv"):
        files.check_written()
