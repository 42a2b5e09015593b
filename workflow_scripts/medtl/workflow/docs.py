"""The settings tables of docs/configuration.md and docs/datasets.md, written from the declarations
(:mod:`medtl.settings`) that the config check and the jobs use, so the three never disagree.

Each table sits in its document between ``<!-- generated: <name> -->`` and ``<!-- /generated -->``.
``python -m medtl.workflow.docs`` rewrites them (run from the repository root, ``workflow_scripts`` on the
path); ``tests/test_docs.py`` fails when a document is out of date.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable

from medtl.settings import Settings, show


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _defaults(settings: Settings) -> str:
    """`name: default` for each setting; a true flag is its bare name (`ema`), as the docs write them."""
    parts = []
    for name, setting in settings.declared.items():
        if setting.required:
            parts.append(name)
        elif setting.default is True:
            parts.append(name)
        else:
            parts.append(f"{name}: {show(setting.default).strip(chr(39))}")
    return f"`{', '.join(parts)}`" if parts else ""


def _rows(owner: str, settings: Settings) -> list[str]:
    return [f"| {owner} | `{name}` | {_cell(s.allowed())}{' or null' if s.nullable else ''} | "
            f"{'required' if s.required else f'`{show(s.default)}`'} | {_cell(s.doc)} |"
            for name, s in settings.declared.items()]


def _settings_table(owners: list[tuple[str, Settings]], first: str) -> str:
    lines = [f"| {first} | setting | allowed | default | what it does |", "|---|---|---|---|---|"]
    for owner, settings in owners:
        lines += _rows(owner, settings)
    return "\n".join(lines)


def strategies() -> str:
    from medtl.strategies import STRATEGIES

    order = ["ft", "scratch", "lp", "g_lf", "g_fl", "lp_ft", "l2_sp", "l1_sp", "auto_rgn", "spft",
             "lora", "dora", "bitfit", "llrd", "knn"]
    names = [n for n in order if n in STRATEGIES] + [n for n in STRATEGIES.names() if n not in order]
    lines = ["| name | what trains | settings (defaults) |", "|---|---|---|"]
    for name in names:
        spec = STRATEGIES.get(name)
        lines.append(f"| `{name}` | {_cell(spec.trains)} | {_defaults(spec.settings)} |")
    return "\n".join(lines)


def strategy_settings() -> str:
    from medtl.strategies import STRATEGIES

    return _settings_table([(f"`{n}`", STRATEGIES.get(n).settings) for n in STRATEGIES.names()
                            if STRATEGIES.get(n).settings.declared], "strategy")


def dense_settings() -> str:
    from medtl.detection.models import TRAINING as DETECTION_TRAINING
    from medtl.detection.strategies import DETECTION_STRATEGIES
    from medtl.segmentation.spec import TRAINING as SEGMENTATION_TRAINING
    from medtl.segmentation.strategies import SEGMENTATION_STRATEGIES

    owners = [(f"`detection.strategies: {n}`", DETECTION_STRATEGIES.get(n).settings) for n in
              DETECTION_STRATEGIES.names()]
    owners += [(f"`segmentation.strategies: {n}`", SEGMENTATION_STRATEGIES.get(n).settings) for n in
               SEGMENTATION_STRATEGIES.names()]
    owners += [("`detection.training`, a model's `training`", DETECTION_TRAINING),
               ("`segmentation.training`, a model's `training`", SEGMENTATION_TRAINING)]
    return _settings_table(owners, "where")


def section_settings() -> str:
    from medtl.models.weights_declaration import DENSE_WEIGHTS, WEIGHTS
    from medtl.report.declaration import DENSE_REPORT, REPORT
    from medtl.training.declaration import TRAINING

    owners = [("`training`", TRAINING)]
    owners += [(f"`architectures: <name>: weights`, type `{kind}`", settings) for kind, settings in WEIGHTS.items()
               if settings.declared]
    owners += [(f"`detection`/`segmentation.models: <name>: weights`, type `{kind}`", settings)
               for kind, settings in DENSE_WEIGHTS.items() if settings.declared]
    owners += [("`report`", REPORT), ("`detection.report`, `segmentation.report`", DENSE_REPORT)]
    return _settings_table(owners, "section")


def own_data_options() -> str:
    from medtl.data import DATASETS

    return _settings_table([(f"`{n}`", Settings.of(DATASETS.get(n).options)) for n in ("csv_table", "image_folder")],
                           "type")


def located_options() -> str:
    from medtl.data.options import LOCATED

    return _settings_table([("every source with files", LOCATED)], "source")


def image_options() -> str:
    from medtl.data.options import IMAGE

    return _settings_table([("every source", IMAGE)], "source")


def source_options() -> str:
    from medtl.data import DATASETS, DENSE_DATASETS
    from medtl.data.options import LOCATED

    lines = ["| source | its own options (defaults); the image options, and those of every source with files, "
             "come on top |", "|---|---|"]
    for registry in (DATASETS, DENSE_DATASETS):
        for name in registry.names():
            declared = Settings.of(registry.get(name).options)
            own = Settings(**{k: s for k, s in declared.declared.items() if k not in LOCATED.declared})
            note = " (declared by their defaults only: other options are not checked)" if declared.open else ""
            lines.append(f"| `{name}` | {_defaults(own) or '(none)'}{note} |")
    return "\n".join(lines)


#: document -> the generated tables it holds
TABLES: dict[str, dict[str, Callable[[], str]]] = {
    "docs/configuration.md": {"strategies": strategies, "strategy-settings": strategy_settings,
                              "dense-settings": dense_settings, "section-settings": section_settings,
                              "own-data-options": own_data_options},
    "docs/datasets.md": {"located-options": located_options, "image-options": image_options,
                         "source-options": source_options},
}

# a block's body never reaches into the next block
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>(?:(?!<!-- generated)[^\n]*\n)*?)"
                    r"(<!-- /generated -->)")


def render(text: str, tables: dict[str, Callable[[], str]]) -> str:
    """``text`` with every generated block it holds rewritten; KeyError for a block no function writes."""
    return _BLOCK.sub(lambda m: m.group(1) + tables[m.group("name")]() + "\n" + m.group(4), text)


def blocks(text: str) -> list[str]:
    return [m.group("name") for m in _BLOCK.finditer(text)]


def main(root: str = ".") -> int:
    stale = []
    for doc, tables in TABLES.items():
        path = Path(root) / doc
        text = path.read_text()
        missing = sorted(set(tables) - set(blocks(text)))
        if missing:
            print(f"{doc}: no place for the tables {missing} (add '<!-- generated: NAME -->' and "
                  "'<!-- /generated -->' lines)", file=sys.stderr)
            return 1
        new = render(text, tables)
        if new != text:
            path.write_text(new)
            stale.append(doc)
    print(f"rewrote {', '.join(stale)}" if stale else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
