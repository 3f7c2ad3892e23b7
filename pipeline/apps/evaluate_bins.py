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

With ``--truth`` it measures instead whether the bins' boxes are what the network uses (run it
before trusting a pointing score in a bin): per clip, decoded as the job decodes it, the
label's probability clean, with the target's boxes blanked (the network's mean colour, every
frame with a box) and with a box of the same size half the frame away on both axes blanked instead;
per bin the network's accuracy, the means, and the share of clips where blanking the target
costs more. Printed and written to ``OUT/truth_bins.md``::

    python -m pipeline.apps.evaluate_bins --manifest DIR/speed.jsonl --output OUT --truth \
        --model synth_small3d --checkpoint walker.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models import build_model
from pipeline.apps.compose import blanked_probs
from pipeline.apps.evaluate import markdown, summarise
from pipeline.apps.report.stats import Paired, paired
from pipeline.outputs import read_table
from transforms.decode import clip_boxes, decode_clip
from transforms.metrics import box_oracle_map
from transforms.scoring import Scorer
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


def elsewhere(mask: np.ndarray) -> np.ndarray:
    """bool (T, H, W): ``mask`` moved half the frame on both axes, wrapping (a region of the
    same size and shape that is not the target's)."""
    return np.roll(mask, (mask.shape[1] // 2, mask.shape[2] // 2), axis=(1, 2))


def truth_rows(manifest: Path, scorer: Scorer) -> list[dict]:
    """Per manifest row with boxes and a class index as ``label`` (other rows are left out):
    ``video``, ``correct`` and p(label) clean / target's boxes blanked / the same boxes
    :func:`elsewhere` blanked (:func:`~pipeline.apps.compose.blanked_probs`, the network's mean
    colour), the clip decoded as the job decodes it."""
    spec = scorer.spec
    out = []
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("boxes") is None or not isinstance(row.get("label"), int):
            continue
        path = row["video"] if Path(row["video"]).is_absolute() else str(
            manifest.parent / row["video"])
        clip = decode_clip(path, int(row.get("start_frame") or 0), spec.num_frames,
                           spec.input_size, spec.resize_ratio)
        boxes = clip_boxes(row["boxes"], clip.frame_indices, clip.source_size, clip.scale,
                           clip.offset, spec.input_size)
        target = box_oracle_map(clip.frames.shape[:3], boxes) > 0
        p = blanked_probs(scorer, clip.frames, [target, elsewhere(target)])
        label = row["label"]
        out.append({"video": row["video"], "correct": int(p[0].argmax()) == label,
                    "p": float(p[0, label]), "p_target": float(p[1, label]),
                    "p_else": float(p[2, label])})
    return out


def truth_table(rows: list[dict], bins: dict[str, tuple], by: Sequence[str]) -> str:
    """Markdown: one line per bin of :func:`truth_rows`'s rows."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[bins[row["video"]]].append(row)
    lines = ["| bin | clips | accuracy | p(label) clean | target's boxes blanked | same-size box "
             "elsewhere blanked | clips where the target's blanking costs more |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in sorted(grouped, key=lambda k: tuple((v is None, str(type(v)), v) for v in k)):
        g = grouped[key]
        mean = {k: float(np.mean([r[k] for r in g])) for k in ("correct", "p", "p_target",
                                                               "p_else")}
        costs = np.mean([r["p"] - r["p_target"] > r["p"] - r["p_else"] for r in g])
        lines.append(f"| {_bin_name(by, key)} | {len(g)} | {mean['correct']:.2f} | "
                     f"{mean['p']:.3f} | {mean['p_target']:.3f} | {mean['p_else']:.3f} | "
                     f"{costs:.2f} |")
    return "\n".join(lines) + "\n"


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
    ap.add_argument("--truth", action="store_true",
                    help="instead: the blanking check per bin with --model (module docstring)")
    ap.add_argument("--model", default="synth_small3d", help="--truth: the network")
    ap.add_argument("--checkpoint", default=None, help="--truth: its weights (a state dict)")
    args = ap.parse_args(argv)
    by = [k.strip() for k in args.by.split(",") if k.strip()]
    if args.truth:
        model, spec = build_model(args.model, args.checkpoint)
        scorer = Scorer(model, spec, torch.device("cpu"))
        text = truth_table(truth_rows(args.manifest, scorer),
                           manifest_bins(args.manifest, by), by)
        print(text)
        Path(args.output).mkdir(parents=True, exist_ok=True)
        Path(args.output, "truth_bins.md").write_text(text)
        return 0
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
