"""The layers point one way: run_pipeline.py → pipeline/ → transforms/ → models/.

Applications (``pipeline/apps``: synthetic data, training, evaluation, demo, pictures) and the
benchmarks (``benchmarks/``) sit on top of the job and nothing below them imports them. Every
import counts, including the ones inside functions and under ``TYPE_CHECKING``.
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
