"""The package structure (docs/architecture.md): the import graph of the library is acyclic, dependencies flow one
way (firmware_export -> calibration -> anomaly; the CLI and the demo on top), and each decision has one owner."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("anomaly", "calibration", "firmware_export")
TOP_MODULES = ("humwatch_cli", "humwatch_demo")
LAYER = {"anomaly": 0, "calibration": 1, "firmware_export": 2, "humwatch_cli": 3, "humwatch_demo": 3}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = p
    for m in TOP_MODULES:
        mods[m] = ROOT / f"{m}.py"
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The most specific known module a dotted name lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path) -> set[str]:
    """Every project module ``name`` imports, at module level or inside functions. ``from pkg import sub`` depends on
    the submodule ``pkg.sub`` (not on the package), ``from mod import obj`` on ``mod``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}".rstrip(".")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            r = _resolve(t)
            if r and r != name and r.split(".")[0] in LAYER:
                out.add(r)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_graph_was_parsed():
    assert len(MODULES) > 40 and "anomaly.decision" in GRAPH["calibration.calibrate"]
    assert "anomaly.modeldir" in GRAPH["anomaly.yamnet"]  # a function-level import would count too


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(GRAPH):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_import_graph_is_acyclic():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_dependencies_flow_one_way():
    """anomaly never imports calibration or firmware_export, calibration never imports firmware_export, and no
    package imports the CLI or the demo."""
    wrong = sorted(f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps
                   if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]])
    assert wrong == []


# -- one owner per decision ----------------------------------------------------------------------------------------
def _library_sources():
    for name, path in MODULES.items():
        yield name, path.read_text()


@pytest.mark.parametrize("pattern, owner, what", [
    (r"\.std\(ddof", "anomaly.decision", "the threshold rule's sigma"),
    (r"^(DEFAULT_K|DEFAULT_RULE|K_RANGE)\s*=", "anomaly.decision", "the decision defaults"),
    (r"^BAND_ERROR_EPS\s*=", "anomaly.score", "the score's epsilon"),
    (r"einsum\(\"ij,jk,ik->i\"", "anomaly.score", "the Gaussian score"),
    (r"^def (file_sha256|directory_hash|model_hash|classifier_hash)\(", "anomaly.modeldir", "model-folder hashes"),
    (r"\(\s*\w+\s*/\s*\"model\.json\"\s*\)\.read_(text|bytes)\(\)", "anomaly.modeldir", "reading model.json"),
    (r"len\(self\.window\) |sum\(self\.window\)", "anomaly.decision", "the m-of-n window"),
])
def test_one_owner(pattern, owner, what):
    where = sorted(name for name, text in _library_sources() if re.search(pattern, text, flags=re.M))
    assert where == [owner], f"{what} is written in {where}, its owner is {owner}"
