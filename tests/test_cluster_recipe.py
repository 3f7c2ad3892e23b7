"""The worker image's recipe, checked as far as a machine without a Docker engine can: the
Dockerfile copies files that exist, and the project built from exactly those files holds every
package, module and data file (so the image's ``pip install .`` installs a complete job)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copied_paths(dockerfile: Path) -> list[str]:
    """The sources of every COPY line (the last word is the destination)."""
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words and words[0] == "COPY":
            sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    return sources


def project_files() -> set[str]:
    """What the installed project must hold: the packages' modules and data files."""
    tracked = subprocess.run(["git", "ls-files", "models", "transforms", "pipeline"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    keep = [f for f in tracked if f.endswith(".py") or f.startswith("models/data/")]
    return {*keep, "run_pipeline.py"}


def test_the_dockerfile_copies_a_complete_project(tmp_path):
    sources = copied_paths(ROOT / "Dockerfile")
    assert {"setup.py", "run_pipeline.py", "models", "transforms", "pipeline"} <= set(sources)
    context = tmp_path / "context"
    context.mkdir()
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"the Dockerfile copies {src}, which does not exist"
        if path.is_dir():
            shutil.copytree(path, context / src,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, context / src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path / "dist"), str(context)], check=True,
                   timeout=300)
    wheel = next((tmp_path / "dist").glob("vidxai-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(f for f in project_files() if f not in names)
    assert not missing, f"the image would lack {missing[:10]}"
