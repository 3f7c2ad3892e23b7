"""The docs stay true: what README.md and docs/ cite exists, and every flag is documented.

1. every relative link (``[text](path#anchor)``, images too) resolves to a file of the
   repository, and an ``#anchor`` to a heading of that markdown file (GitHub's anchor rule);
   every repository path the text names in backticks (``transforms/sink.py``,
   ``tests/test_x.py::test_y``) exists, down to the named test or function;
2. every flag ``run_pipeline.py --help`` lists (and ``report --help``, ``concepts --help``) is
   named in README.md or docs/, and every column the sink writes is described in the user
   guide's "Outputs";
3. no file of the repository cites the background notes outside it (the papers are cited);
4. every benchmark module has a section in docs/BENCHMARKS.md with its command.

No Beam pipeline runs; the processes started only print their ``--help``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# Names a backticked path must start with to be read as a path in this repository (others are
# outputs, caches or examples: `out/metrics`, `~/.cache/vidxai`, `OUTPUT/_lock`).
TOP = {"pipeline", "transforms", "models", "tests", "benchmarks", "docs", ".ci",
       "run_pipeline.py", "setup.py", "Makefile", "Dockerfile", "pyproject.toml", "README.md"}
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines of a markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text lower-cased, every character that is
    not a letter, digit, space, hyphen or underscore dropped, spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of ``path`` (repeats get -1, -2, ...)."""
    seen: Counter[str] = Counter()
    out: set[str] = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        out.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return out


def links(path: Path) -> list[str]:
    return [m.group(1) for line in prose_lines(path.read_text(encoding="utf-8"))
            for m in LINK.finditer(line)]


def cited_paths(path: Path) -> list[str]:
    """Backticked repository paths in the prose of ``path``."""
    out = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for span in CODE_SPAN.findall(line):
            token = span.strip().split()[0] if span.strip() else ""
            if "/" not in token and token not in TOP:
                continue
            if token.split("/")[0] in TOP and not re.search(r"[<>{}$]", token):
                out.append(token.rstrip(".,;:"))
    return out


def test_the_anchor_rule_on_known_headings():
    assert github_anchor("Failures: what a scheduler sees") == "failures-what-a-scheduler-sees"
    assert (github_anchor("Incremental exact occlusion (`--incremental`)")
            == "incremental-exact-occlusion---incremental")
    assert github_anchor("What enters each method's `config_hash`") == (
        "what-enters-each-methods-config_hash")
    assert github_anchor("When: the temporal split (AOSA-T)") == "when-the-temporal-split-aosa-t"
    assert github_anchor("`approx_vs_exact`") == "approx_vs_exact"


def test_fenced_code_is_not_prose():
    text = "# Title\n```bash\n# a comment, not a heading\n[x](missing.md)\n```\n## Real\n"
    assert prose_lines(text) == ["# Title", "## Real"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert broken == [], f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_repository_path_exists(doc):
    missing = []
    for cited in cited_paths(doc):
        path, _, name = cited.partition("::")
        if not name and re.match(r"^[\w./-]+\.py:\w+$", path):  # benchmarks/tcav.py:make_world
            path, name = path.split(":")
        if "*" in path:
            if not list(ROOT.glob(path)):
                missing.append(cited)
            continue
        file = ROOT / path
        if not file.exists():
            missing.append(cited)
        elif name and not defines(file, name):
            missing.append(f"{cited} (no {name} in {path})")
    assert missing == [], f"{doc.relative_to(ROOT)} cites what does not exist: {missing}"


def defines(file: Path, name: str) -> bool:
    """``file`` defines a function, class or module-level name ``name``."""
    pattern = rf"^\s*(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*="
    return re.search(pattern, file.read_text(encoding="utf-8"), re.M) is not None


def run_pipeline_flags(*subcommand: str) -> list[str]:
    """The flags ``run_pipeline.py [subcommand] --help`` lists in its usage lines."""
    out = subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *subcommand, "--help"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    usage = out.split("\n\n", 1)[0]
    return sorted(set(re.findall(r"(?<![\w-])(--[a-z0-9][\w-]*)", usage)) - {"--help"})


def undocumented(flags: list[str]) -> list[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    return [f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", text)]


def test_every_flag_is_documented():
    flags = run_pipeline_flags()
    assert len(flags) > 40 and "--input" in flags and "--list-models" in flags  # parsed at all
    assert undocumented(flags) == [], "flags named nowhere in README.md or docs/"


@pytest.mark.parametrize("subcommand", ["report", "concepts"])
def test_every_subcommand_flag_is_documented(subcommand):
    flags = run_pipeline_flags(subcommand)
    assert "--output" in flags  # parsed at all
    assert undocumented(flags) == [], f"run_pipeline.py {subcommand}: flags named nowhere"


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a markdown text."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def test_every_output_column_is_described():
    from transforms.sink import ERROR_SCHEMA, METRICS_SCHEMA, saliency_schema

    outputs = section((ROOT / "docs" / "USER_GUIDE.md").read_text(encoding="utf-8"), "Outputs")
    named = set(CODE_SPAN.findall(outputs))
    columns = {*ERROR_SCHEMA.names, *METRICS_SCHEMA.names, *saliency_schema((2, 4, 4)).names,
               "model", "method"}  # the two Hive partition columns
    assert sorted(columns - named) == [], "columns of the tables missing from the user guide"


def repository_text_files():
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in skip or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.stat().st_size < 2_000_000:
            data = path.read_bytes()
            if b"\0" not in data:
                yield rel, data.decode("utf-8", errors="replace")


def test_nothing_cites_files_outside_the_repository():
    # spelt in pieces so that this file does not cite them itself
    notes = "REFERENCE" + ".md"
    outside = ("../" + "shared", "/work/" + "shared")
    found = [f"{rel}:{n}" for rel, text in repository_text_files()
             for n, line in enumerate(text.splitlines(), 1)
             if notes in line or any(o in line for o in outside)]
    assert found == [], f"cite the papers, not files outside the repository: {found}"


def benchmark_modules() -> list[str]:
    return sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                  if p.stem not in {"__init__", "common", "run_all"})


def test_every_benchmark_is_documented_with_its_command():
    text = (ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")
    sections = re.split(r"(?m)^## ", text)
    undocumented = []
    for name in benchmark_modules():
        body = next((s for s in sections if s.startswith(f"`{name}`")), None)
        command = re.compile(rf"python\s+(-m benchmarks\.{name}\b|benchmarks/{name}\.py)")
        if body is None or not command.search(body):
            undocumented.append(name)
    assert len(benchmark_modules()) >= 12
    assert undocumented == [], f"benchmarks without a section and command: {undocumented}"
