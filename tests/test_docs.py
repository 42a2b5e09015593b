"""The settings tables of the README and docs/datasets.md are written from the declarations the config
check and the jobs use (medtl.workflow.docs): a declaration changed without them fails here."""
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


def test_every_strategy_setting_is_in_the_readme():
    from medtl.strategies import STRATEGIES

    text = (REPO / "README.md").read_text()
    for name in STRATEGIES.names():
        assert f"| `{name}` |" in text
        for setting in STRATEGIES.get(name).settings.declared:
            assert f"| `{name}` | `{setting}` |" in text, (name, setting)


def test_a_block_ends_before_the_next_one():
    text = "<!-- generated: a -->\nold\n<!-- /generated -->\nkept\n<!-- generated: b -->\n<!-- /generated -->\n"
    out = docs.render(text, {"a": lambda: "A", "b": lambda: "B"})
    assert out == "<!-- generated: a -->\nA\n<!-- /generated -->\nkept\n<!-- generated: b -->\nB\n<!-- /generated -->\n"
