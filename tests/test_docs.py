"""The settings tables of docs/configuration.md and docs/datasets.md are written from the declarations the config
check and the jobs use (medtl.workflow.docs): a declaration changed without them fails here."""
import re
from pathlib import Path

import pytest

from medtl.workflow import docs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("doc", sorted(docs.TABLES))
def test_generated_tables_match_the_declarations(doc):
    text = (REPO / doc).read_text()
    assert set(docs.TABLES[doc]) <= set(docs.blocks(text)), f"{doc} lacks a place for a generated table"
    assert docs.render(text, docs.TABLES[doc]) == text, \
        f"{doc} is out of date: run `PYTHONPATH=workflow_scripts .venv/bin/python -m medtl.workflow.docs`"


def test_every_strategy_setting_is_in_the_configuration_doc():
    from medtl.strategies import STRATEGIES

    text = (REPO / "docs" / "configuration.md").read_text()
    for name in STRATEGIES.names():
        assert f"| `{name}` |" in text
        for setting in STRATEGIES.get(name).settings.declared:
            assert f"| `{name}` | `{setting}` |" in text, (name, setting)


def test_a_block_ends_before_the_next_one():
    text = "<!-- generated: a -->\nold\n<!-- /generated -->\nkept\n<!-- generated: b -->\n<!-- /generated -->\n"
    out = docs.render(text, {"a": lambda: "A", "b": lambda: "B"})
    assert out == "<!-- generated: a -->\nA\n<!-- /generated -->\nkept\n<!-- generated: b -->\nB\n<!-- /generated -->\n"


# -- the README is the front door; the rest lives in docs/ (issue 20, item 6) ------------------------------
DOCUMENTS = ["README.md", "benchmarks/README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_every_relative_link_resolves(doc):
    path = REPO / doc
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", path.read_text(), flags=re.S))   # code is not a link
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue   # a web address
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{doc}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(dest.read_text()), f"{doc}: no heading for #{anchor} in {dest.name}"


def test_the_readme_is_short_and_links_every_docs_page():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    links = set(_LINK.findall(text))
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in links, f"README.md does not link docs/{page.name}"
    assert "benchmarks/README.md" in links
    # CI runs `make test` (.ci/run); the README's two commands stay as they are
    assert "make demo   # installs everything into .venv" in text
    assert "make test   # installs everything into .venv, then runs the test suite" in text
