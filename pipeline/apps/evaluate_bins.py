"""Per-bin tables of an evaluation: a manifest's clips grouped by its fields (the speed sweep).

    python -m pipeline.apps.evaluate_bins --manifest DIR/speed.jsonl --output OUT \\
        --by deform,speed --pair aosa,osa --pair aosa_sgl,osa

``OUT`` is the ``--output`` of a ``pipeline.apps.evaluate`` (or ``run_pipeline.py``) run on
that manifest. The clips are grouped by the manifest rows' values of the ``--by`` fields (a
metrics row is matched to the manifest row whose ``video`` its video path ends with). Per bin
it writes ``pipeline.apps.evaluate``'s table (deletion, insertion and S-PT with 95 % bootstrap
intervals over the bin's clips), and for each ``--pair A,B`` the paired difference A − B of
each metric over the clips both explained (mean with its 95 % bootstrap interval, share of
clips where A is better, two-sided Wilcoxon p: :func:`pipeline.apps.report.stats.paired`);
first an overview with one line per bin. Printed and written to ``OUT/evaluation_bins.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.apps.evaluate import markdown, summarise
from pipeline.apps.report.stats import Paired, paired
from pipeline.outputs import read_table
from transforms.sink import OutputPaths

# metric column, name in the tables, whether higher is better
METRICS = (("spt_rate", "S-PT", True), ("deletion_auc", "deletion", False),
           ("insertion_auc", "insertion", True))


def manifest_bins(manifest: Path, by: Sequence[str]) -> dict[str, tuple]:
    """``video`` (as the manifest writes it) -> its bin, the values of the ``by`` fields."""
    bins = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            bins[row["video"]] = tuple(row.get(key) for key in by)
    return bins


def group_rows(rows: list[dict], bins: dict[str, tuple]) -> dict[tuple, list[dict]]:
    """Metrics rows per bin; a row whose video matches no manifest row raises ValueError."""
    suffixes = sorted(bins, key=len, reverse=True)  # the longest matching path wins
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        video = row["video"].replace("\\", "/")
        match = next((v for v in suffixes if video == v or video.endswith("/" + v)), None)
        if match is None:
            raise ValueError(f"metrics row of {row['video']!r} matches no manifest row")
        grouped[bins[match]].append(row)
    return dict(grouped)


def paired_metrics(rows: list[dict], a: str, b: str) -> dict[str, Paired]:
    """Per metric the paired comparison of methods ``a`` and ``b`` on the same clips."""
    by_clip = {(r["method"], r["clip_id"]): r for r in rows}
    clips = sorted({c for m, c in by_clip if m == a} & {c for m, c in by_clip if m == b})
    out = {}
    for column, name, higher in METRICS:
        def values(method: str, column: str = column) -> np.ndarray:
            return np.array([np.nan if by_clip[(method, c)][column] is None
                             else float(by_clip[(method, c)][column]) for c in clips])
        out[name] = paired(values(a), values(b), higher_is_better=higher)
    return out


def _ci(t: tuple[float, float, float], sign: bool = False) -> str:
    if np.isnan(t[0]):
        return "–"
    f = "+.3f" if sign else ".3f"
    return f"{t[0]:{f}} [{t[1]:{f}}, {t[2]:{f}}]"


def _bin_name(by: Sequence[str], key: tuple) -> str:
    return ", ".join(f"{k} {v}" for k, v in zip(by, key, strict=True))


def report(rows: list[dict], bins: dict[str, tuple], by: Sequence[str],
           pairs: Sequence[tuple[str, str]], methods: Sequence[str] | None = None) -> str:
    """The overview, then per bin the methods' table and the paired differences (markdown)."""
    grouped = group_rows(rows, bins)
    keys = sorted(grouped, key=lambda k: tuple((v is None, str(type(v)), v) for v in k))
    names = list(methods or sorted({r["method"] for r in rows}))
    head = ["bin", "clips", "accuracy"] + [f"S-PT {m}" for m in names]
    head += [f"{a} − {b} {name}" for a, b in pairs for _, name, _ in METRICS]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    sections = []
    for key in keys:
        summary = summarise(grouped[key])
        acc = next(iter(summary.values()))["accuracy"]
        clips = max(s["clips"] for s in summary.values())
        cells = [_bin_name(by, key), str(clips), f"{acc:.2f}"]
        cells += [_ci(summary[m]["spt"]) if m in summary else "–" for m in names]
        text = [f"### {_bin_name(by, key)}", "", f"{clips} clips, network accuracy {acc:.3f}.",
                "", markdown(summary, names), ""]
        for a, b in pairs:
            diffs = paired_metrics(grouped[key], a, b)
            cells += [_ci(d.diff, sign=True) for d in diffs.values()]
            text.append(f"{a} − {b}, paired over {next(iter(diffs.values())).clips} clips: "
                        + "; ".join(f"{name} {_ci(d.diff, sign=True)}, {a} better in "
                                    f"{d.win_rate:.0%}, Wilcoxon p {d.p_value:.3g}"
                                    for name, d in diffs.items()) + ".")
            text.append("")
        lines.append("| " + " | ".join(cells) + " |")
        sections.append("\n".join(text))
    return "\n".join(lines) + "\n\n" + "\n".join(sections)


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(",")
    if not sep or not a or not b or "," in b:
        raise argparse.ArgumentTypeError(f"a pair is A,B (two methods), got {text!r}")
    return a.strip(), b.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.apps.evaluate_bins",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True, help="the evaluated manifest")
    ap.add_argument("--output", required=True, help="the evaluation's --output")
    ap.add_argument("--by", default="deform,speed",
                    help="comma list of manifest fields that define a bin")
    ap.add_argument("--pair", type=_pair, action="append", default=[], metavar="A,B",
                    help="paired difference A − B per bin (repeatable)")
    ap.add_argument("--methods", default=None, help="comma list: the methods' order")
    args = ap.parse_args(argv)
    by = [k.strip() for k in args.by.split(",") if k.strip()]
    table = read_table(OutputPaths(args.output).metrics)
    if table is None:
        ap.error(f"{args.output} holds no metrics")
    text = report(table.to_pylist(), manifest_bins(args.manifest, by), by, args.pair,
                  args.methods.split(",") if args.methods else None)
    print(text)
    Path(args.output, "evaluation_bins.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
