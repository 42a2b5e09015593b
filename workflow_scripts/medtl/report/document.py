"""The words around the tables and figures, written once, and the pages Snakemake's HTML report shows.

Each result's caption is ``report/<name>.rst`` at the top of the repository. Snakemake's report
(``snakemake --report report.html``) shows it beside the result (``report(..., caption=...)`` in
``rules/*.smk``), and the report builders head the matching section of their ``report.md`` with the same
file (:func:`caption`), so the two reports cannot say different things. Captions use only the markup that
reStructuredText and Markdown share (paragraphs, ``code``, *emphasis*, **strong**, "- " lists), so one
text reads right in both.

Snakemake's report shows images, HTML and PDF; a CSV file is only offered as a download. Each table a
reader looks at is therefore also written as an HTML page (:func:`write_table_pages`), rendered from the
table's own Markdown file.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from medtl.io import atomic_path

CAPTIONS = Path(__file__).resolve().parents[3] / "report"

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 13px; color: #1e293b;
       margin: 1.2em; line-height: 1.45; }}
h1, h2, h3 {{ font-weight: 600; margin: 1.1em 0 0.4em; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.15em; }} h3 {{ font-size: 1.05em; }}
table {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-variant-numeric: tabular-nums; }}
th, td {{ border: 1px solid #cbd5e1; padding: 0.2em 0.45em; text-align: left; white-space: nowrap; }}
th {{ background: #f1f5f9; }}
tr:nth-child(even) td {{ background: #f8fafc; }}
code {{ background: #f1f5f9; padding: 0 0.2em; border-radius: 3px; }}
</style></head>
<body>
{body}
</body></html>
"""


def caption(name: str) -> str:
    """The caption ``report/<name>.rst``, as Snakemake's report shows it, for a report.md section."""
    path = CAPTIONS / f"{name}.rst"
    try:
        return path.read_text().strip() + "\n"
    except FileNotFoundError:
        raise FileNotFoundError(f"no caption {path} (captions: {CAPTIONS})") from None


def _unlink(markdown_text: str) -> str:
    """Relative links and images lead nowhere inside the report's page: keep their text only."""
    def plain(m: re.Match) -> str:
        bang, text, target = m.groups()
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto: stay links
            return m.group(0)
        return "" if bang else text
    return _LINK.sub(plain, markdown_text)


def table_page(markdown_text: str, title: str) -> str:
    """A self-contained HTML page of a Markdown document (pipe tables, headings, lists, emphasis)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(_unlink(markdown_text))
    return _PAGE.format(title=html.escape(title), body=body)


def write_table_pages(paths) -> list[str]:
    """For each ``<name>.html`` among ``paths`` (e.g. a rule's outputs), its page rendered from the
    ``<name>.md`` beside it, written atomically; other paths are ignored. Returns the pages written."""
    written = []
    for path in map(Path, map(str, paths)):
        if path.suffix != ".html":
            continue
        source = path.with_suffix(".md")
        if not source.is_file():
            raise FileNotFoundError(f"{path}: no {source.name} beside it to render")
        with atomic_path(path) as tmp:
            tmp.write_text(table_page(source.read_text(), path.stem.replace("_", " ")))
        written.append(str(path))
    return written
