"""Snakemake's HTML report (``snakemake --report report.html``) holds every table and figure of every report
(classification, SPFT, published numbers, detection, segmentation), each with its caption, grouped by task
and study; a browser renders it (headless Chromium, Debian's ``chromium``; make test installs it); and the
report.md files quote the same captions."""
from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest
from report_browser import find_chromium, probe
from workflow_helpers import REPO, snakemake, tiny_config, write_config

from medtl.report.document import CAPTIONS, table_page, write_table_pages

# Every report in seconds: SPFT beside FT on a multi-label dataset (the SPFT report needs AUROC), one
# detector and SAM on a few 64 px synthetic radiographs, one epoch each.
DENSE = {"datasets": {"synth_cxr_dense": {"options": {"n": 24}, "size": 64}}, "strategies": {"ft": {}}}
CONFIG = tiny_config(
    {"ft": {}, "spft": {"head_epochs": 1, "top_k": 1}},
    datasets={"synth_cxr": {"options": {"n_patients": 40, "size": 32}}},
    detection={**DENSE, "models": {"yolov8n": {"type": "yolo", "cfg": "yolov8n.yaml"}},
               "training": {"epochs": 1, "batch_size": 4, "nbs": 4, "workers": 0, "warmup_epochs": 0}},
    segmentation={**DENSE, "models": {"sam_tiny": {"encoder": "vit_tiny", "img_size": 64}},
                  "training": {"epochs": 1, "batch_size": 8}},
)
CATEGORIES = {  # category -> the report folder its results come from
    "Classification · study 1 (strategies)": "classification",
    "Classification · study 2 (SPFT)": "spft",
    "Classification · published numbers": "published",
    "Detection · study 2 (SPFT)": "detection",
    "Segmentation · study 2 (SPFT)": "segmentation",
}
# each report folder's own report.md (the published report's is side_by_side.md)
REPORT_MD = {"classification": "report.md", "spft": "report.md", "published": "side_by_side.md",
             "detection": "report.md", "segmentation": "report.md"}
NOT_IN_HTML_REPORT = {"segmentation/per_image.csv"}  # every (job, image, structure): a study's is far too long


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report")
    cfg = write_config(workdir / "config.yaml", CONFIG)
    snakemake(workdir, cfg)
    snakemake(workdir, cfg, "--report", "report.html")
    return workdir


@pytest.fixture(scope="module")
def rendered(request, tmp_path_factory):
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("CI=true but no Chromium to open the report: make test installs Debian's chromium package")
        pytest.skip("no headless Chromium to open the report (Debian: apt-get install chromium, as make test does as root; "
                    "or CHROMIUM=<browser>)")
    workdir = request.getfixturevalue("finished_run")
    return probe(workdir / "report.html", tmp_path_factory.mktemp("chromium"), chromium)


def plain(rst: str) -> str:
    """A caption's words as the browser shows them: RST markup gone, whitespace collapsed."""
    return " ".join(re.sub(r"``|\*\*|(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w)", "", rst).split())


def report_files(workdir: Path) -> dict[str, Path]:
    root = workdir / "results" / "report"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


# -- in the browser ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_report_opens_with_every_category_by_task_and_study(rendered):
    assert rendered["error"] is None, rendered["error"]
    menu = rendered["menu"].splitlines()
    assert [c for c in menu if c in CATEGORIES] == sorted(CATEGORIES), rendered["menu"]
    assert plain(CAPTIONS.joinpath("workflow.rst").read_text())[:80] in " ".join(rendered["start"].split())
    for category, subcategories in rendered["categories"].items():
        assert category in CATEGORIES
        for subcategory, listing in subcategories.items():
            # the list a reader sees: one row of labels (dataset, result, file) per result
            assert subcategory in listing, (category, subcategory, listing)
            for path in rendered["members"][category][subcategory]:
                for value in rendered["results"][path]["labels"].values():
                    assert value in listing, (category, subcategory, path, value, listing)


@pytest.mark.slow
def test_every_table_and_figure_is_shown_with_its_caption(rendered, finished_run):
    results = {p.split("results/report/", 1)[1]: r for p, r in rendered["results"].items()}
    files = report_files(finished_run)
    figures = {name for name in files if name.endswith(".png")}
    pages = {name for name in files if name.endswith(".html")}
    # every figure and every table page the reports wrote is in the HTML report, and shown
    assert figures and figures <= set(results), figures - set(results)
    assert pages and pages <= set(results), pages - set(results)
    for name in figures:
        shown = results[name]["shown"]
        assert shown and shown["tag"] == "img" and shown["is_result"], name
        assert base64.b64decode(shown["src"].split("base64,", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n", name
    for name in pages:
        shown = results[name]["shown"]
        assert shown and shown["tag"] == "iframe" and shown["is_result"], name
        page = base64.b64decode(shown["src"].split("base64,", 1)[1]).decode()
        md = files[name[:-5] + ".md"].read_text()
        rows = [line for line in md.splitlines() if line.startswith("|") and not re.fullmatch(r"[|:\- ]+", line)]
        if rows:  # its Markdown has tables: the page shows every row of them
            assert "<table>" in page and page.count("<tr>") == len(rows), name
        else:  # a sentence saying why there is none (e.g. nothing matched a published number)
            assert md.splitlines()[-1].split("(")[0] in page, name
    # every table: a page (rendered from its Markdown) or, for the data behind them, a CSV download
    for name in files:
        if name.endswith(".md") and Path(name).name not in ("report.md", "side_by_side.md"):
            assert name[:-3] + ".html" in results, f"{name}: no page in the HTML report"
        if name.endswith(".csv") and name not in NOT_IN_HTML_REPORT:
            assert name in results or name[:-4] + ".html" in results, \
                f"{name}: neither it nor its table page is in the HTML report"
    # each with a caption, rendered without reStructuredText errors, in the category of its task and study
    captions = {plain(p.read_text()) for p in CAPTIONS.rglob("*.rst") if p.name != "workflow.rst"}
    for name, r in results.items():
        info = " ".join(r["info"].split())
        assert "DESCRIPTION" in r["info"], name
        assert any(c[:100] in info for c in captions), f"{name}: no caption of report/ in {info[:300]}"
        assert "System Message" not in r["caption_html"] and "problematic" not in r["caption_html"], name
    for category, subcategories in rendered["members"].items():
        for paths in subcategories.values():
            for path in paths:
                assert path.split("results/report/", 1)[1].startswith(CATEGORIES[category] + "/"), (path, category)


# -- one source for both reports ---------------------------------------------------------------------------
@pytest.mark.slow
def test_each_report_md_quotes_the_captions_of_its_results(finished_run):
    root = finished_run / "results" / "report"
    from medtl.report.outputs import STUDIES  # the captions the report rules attach (rules/common.smk: report_outputs)

    used = {f"{study}/{name}" for study, declared in STUDIES.items() for name in declared.captions()}
    on_disk = {str(p.relative_to(CAPTIONS).with_suffix("")) for p in CAPTIONS.rglob("*.rst")} - {"workflow"}
    assert used == on_disk, f"captions no rule uses: {on_disk - used}; used but missing: {used - on_disk}"
    for folder, md in REPORT_MD.items():
        text = (root / folder / md).read_text()
        for name in sorted(n for n in used if n.startswith(folder + "/")):
            assert (CAPTIONS / f"{name}.rst").read_text().strip() in text, f"{folder}/{md} lacks {name}.rst"


# -- the pages ---------------------------------------------------------------------------------------------
def test_table_pages_render_markdown_tables_and_drop_dead_links(tmp_path):
    (tmp_path / "t.md").write_text("Caption with ``code`` and a [link](t.csv), ![img](f.png).\n\n"
                                   "| a | b |\n|:--|:--|\n| **1** | 2 |\n")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    assert write_table_pages([tmp_path / "t.csv", tmp_path / "t.html"]) == [str(tmp_path / "t.html")]
    page = (tmp_path / "t.html").read_text()
    assert "<table>" in page and "<strong>1</strong>" in page and "<code>code</code>" in page
    assert "a link" in page and "href" not in page and "<img" not in page
    assert "<html" in page and "</html>" in page
    with pytest.raises(FileNotFoundError, match="no u.md"):
        write_table_pages([tmp_path / "u.html"])
    assert "&lt;script&gt;" in table_page("<script>alert(1)</script>", "x")  # raw HTML is not passed through


# -- the report contract: each report rule's declared outputs are exactly what its writer writes ------------------
@pytest.mark.slow
def test_every_report_rule_declares_exactly_the_files_its_writer_writes(finished_run):
    """Snakemake's own list of every output file and the rule that makes it (``--summary``), against the files the
    report writers left under results/report: a file a writer adds without its rule naming it (not in the HTML
    report, never cleaned) or a declared one it stops writing (a MissingOutputException in a study) fails here."""
    workdir = finished_run
    proc = snakemake(workdir, workdir / "config.yaml", "--summary")
    declared: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        cells = line.split("\t")
        if len(cells) > 2 and cells[2].startswith("report_"):
            declared[str(Path(cells[0]).relative_to("results/report"))] = cells[2]
    assert set(declared.values()) == {"report_classification", "report_spft", "report_published",
                                      "report_detection", "report_segmentation"}
    on_disk = set(report_files(workdir))
    assert sorted(on_disk - set(declared)) == [], "written but declared by no report rule"
    assert sorted(set(declared) - on_disk) == [], "declared but not written"
