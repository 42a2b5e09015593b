"""The package's shape: imports only point down (no circle, lazy imports inside functions included), and the
helpers every job shares are written once, in ``medtl.runtime``."""
from __future__ import annotations

import ast
from pathlib import Path

from workflow_helpers import REPO

PACKAGE = REPO / "workflow_scripts" / "medtl"
SHARED = ("signature", "resolve_device", "seed_everything", "save_torch", "rng_state", "set_rng_state")


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the medtl modules it imports anywhere in its text (a function's lazy import counts)."""
    mods = modules()
    graph = {}
    for name, f in mods.items():
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    graph = import_graph()
    assert "medtl.training.job" in graph and "medtl.training.features" in graph["medtl.training.job"]
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_shared_job_helpers_are_written_once_in_runtime():
    defined: dict[str, list[str]] = {}
    for name, f in modules().items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in SHARED:
                defined.setdefault(node.name, []).append(name)
    assert defined == {n: ["medtl.runtime"] for n in SHARED}
    runtime = import_graph()["medtl.runtime"]
    assert runtime <= {"medtl.io"}  # the lowest layer of the jobs
    users = [m for m, deps in import_graph().items() if "medtl.runtime" in deps]
    assert {"medtl.training.job", "medtl.segmentation.train", "medtl.detection.train"} <= set(users)


def test_rule_files_hold_no_defaults_and_no_settings_logic():
    """Issue 20: a job's settings, the grid and the pretraining keys are computed by medtl.workflow (plan,
    dense_plan: unit-tested there); the .smk files keep paths, input functions and rules. What used to live
    there: defaults repeated from the package, a task switch choosing pretraining keys, hp dicts built inline."""
    import re

    rules = Path(__file__).resolve().parents[1] / "rules"
    for smk in sorted(rules.glob("*.smk")):
        text = smk.read_text()
        for pattern, what in ((r'"vit_b"|\b1024\b|\b640\b', "a default repeated from the package"),
                              (r"if task ==", "settings logic per task"),
                              (r'config\["training"\]|config\.get\("training"', "the training section read raw"),
                              (r"\.get\(\"\w+\", (?!\{\})[^)]", "a default given inline")):
            found = re.search(pattern, text)
            assert not found, f"{smk.name}: {what}: {found.group(0)!r}"
        for name, body in re.findall(r"^def (\w+_hp)\(w\):\n((?:    .*\n|\n)+)", text, flags=re.M):
            lines = [line for line in body.splitlines() if line.strip() and not line.strip().startswith('"""')]
            assert len(lines) == 1 and "PLAN" in lines[0], f"{smk.name}: {name} builds settings itself: {lines}"
