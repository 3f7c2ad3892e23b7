"""The layers point one way: run_pipeline.py → pipeline/ → transforms/ → models/.

Applications (``pipeline/apps``: synthetic data, training, evaluation, demo, pictures) and the
benchmarks (``benchmarks/``) sit on top of the job and nothing below them imports them. Every
import counts, including the ones inside functions and under ``TYPE_CHECKING``.

Within the layers no module imports itself back: the imports a module runs when it is loaded
(every import outside a function body, ``TYPE_CHECKING`` ones included) form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer of a module → the top-level names it must never import
FORBIDDEN = {
    "models": ("apache_beam", "transforms", "pipeline", "run_pipeline", "benchmarks"),
    "transforms": ("pipeline", "run_pipeline", "benchmarks"),
    "pipeline": ("run_pipeline", "pipeline.apps", "benchmarks"),
    "pipeline.apps": ("run_pipeline", "benchmarks"),
    "benchmarks": ("run_pipeline",),  # above the job, like the apps; nothing imports them
}


def imported_modules(source: str) -> set[str]:
    """Every module named by an import statement anywhere in ``source``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_of(path: Path) -> str | None:
    rel = path.relative_to(ROOT).parts
    if rel[0] == "pipeline" and len(rel) > 2 and rel[1] == "apps":
        return "pipeline.apps"
    return rel[0] if rel[0] in FORBIDDEN else None


def violations(layer: str, source: str) -> list[str]:
    bad = []
    for name in sorted(imported_modules(source)):
        for forbidden in FORBIDDEN[layer]:
            if name == forbidden or name.startswith(forbidden + "."):
                bad.append(name)
    return bad


def project_modules() -> list[Path]:
    return sorted(p for d in ("models", "transforms", "pipeline", "benchmarks")
                  for p in (ROOT / d).rglob("*.py"))


def test_the_checker_catches_upward_imports():
    assert violations("transforms", "from pipeline.config import RunConfig") == [
        "pipeline.config", "pipeline.config.RunConfig"]
    assert violations("models", "def f():\n    import apache_beam as beam\n") == ["apache_beam"]
    assert violations("pipeline", "from pipeline.apps import demo") == [
        "pipeline.apps", "pipeline.apps.demo"]
    assert violations("pipeline", "from pipeline import apps") == ["pipeline.apps"]
    assert violations("pipeline.apps", "from pipeline.job import run") == []
    assert violations("transforms", "from transforms.records import ClipRef") == []


@pytest.mark.parametrize("path", project_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_higher_layer(path: Path):
    layer = layer_of(path)
    assert layer is not None
    assert violations(layer, path.read_text()) == [], f"{path} imports a higher layer"


# --- No import cycle ----------------------------------------------------------------------------


def load_time_imports(source: str) -> set[str]:
    """The modules ``source`` imports when it is loaded: every import outside function bodies
    (class bodies, ``if`` / ``try`` blocks and ``TYPE_CHECKING`` included)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                names.update(imported_modules(ast.unparse(child)))
            visit(child)

    visit(ast.parse(source))
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module → the project modules it imports at load time (``from a import b`` names the
    module ``a.b`` when there is one, else ``a``)."""
    return {name: {m for m in load_time_imports(src) if m in sources and m != name}
            for name, src in sources.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle ``[a, b, …, a]``, or ``[]`` when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    sources = {"p.a": "from p.b import x\n", "p.b": "import typing\nif typing.TYPE_CHECKING:"
               "\n    from p.a import Y\n", "p.c": "def f():\n    from p.a import z\n"}
    graph = import_graph(sources)
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": set()}  # imports in f() run later
    assert find_cycle(graph) == ["p.a", "p.b", "p.a"]
    assert find_cycle({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": set()}) == []


def test_no_import_cycle_among_the_project_modules():
    paths = [*project_modules(), ROOT / "run_pipeline.py"]
    graph = import_graph({module_name(p): p.read_text() for p in paths})
    assert find_cycle(graph) == [], "import cycle"
