"""Score explanation methods where the truth is known: the synthetic dataset's held-out split.

    python -m pipeline.apps.evaluate [--data DIR] [--output OUT] [--methods aosa,random,...]

Generates the synthetic dataset if ``--data`` has none (``pipeline.apps.synth``, the training
settings, so the test split is the one held out from training), runs the Beam job with
the trained ``synth_small3d`` network on the test split (target = the true label), and prints per
method the mean deletion / insertion AUC and the spatial pointing game (S-PT) with 95 %
bootstrap intervals over clips, plus the pooled hit rate (hits / frames over the whole split, the
paper's definition). The table is also written to ``OUT/evaluation.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline import job
from pipeline.apps.report.stats import bootstrap_ci, spearman
from pipeline.outputs import read_table
from transforms.sink import OutputPaths

# The rows of the AOSA paper's Tables 1–3 (STEP aside), then the two references.
DEFAULT_METHODS = ("gradcam,gradcam_frame,osa,aosa_sgl,aosa,aosa_sgl_approx,aosa_approx,"
                   "random,center")


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per method: clip count, S-PT (mean of per-clip rates, CI; pooled), deletion, insertion."""
    by = defaultdict(list)
    for r in rows:
        by[r["method"]].append(r)
    out = {}
    for method, rs in by.items():
        spt = np.array([np.nan if r["spt_rate"] is None else r["spt_rate"] for r in rs])
        hits = sum(r["spt_hits"] or 0 for r in rs)
        frames = sum(r["spt_frames"] or 0 for r in rs)
        out[method] = {
            "clips": len(rs),
            "spt": bootstrap_ci(spt),
            "spt_pooled": hits / frames if frames else float("nan"),
            "deletion": bootstrap_ci(np.array([r["deletion_auc"] for r in rs])),
            "insertion": bootstrap_ci(np.array([r["insertion_auc"] for r in rs])),
            "accuracy": float(np.mean([bool(r["correct"]) for r in rs])),
            "seconds": float(np.mean([r["seconds"] for r in rs])),
            "forward": float(np.mean([r["forward_passes"] for r in rs])),
            "backward": float(np.mean([r["backward_passes"] for r in rs])),
            "tpt": bootstrap_ci(_floats(rs, "tpt_hit")),
            "t_share": bootstrap_ci(_floats(rs, "t_above_median_share")),
        }
    return out


def _floats(rows: list[dict], key: str) -> np.ndarray:
    """A column as float64, NaN where null or absent (bools become 0 / 1)."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])


def markdown(summary: dict[str, dict], order: list[str] | None = None) -> str:
    """The paper's Tables 1–3 in one: per method deletion, insertion and S-PT with 95 %
    intervals, the pooled S-PT, seconds per map and the network passes per map; with a
    temporal ground truth also T-PT and the share of the above-median mass in the true frames.
    """

    def ci(t):
        return "–" if np.isnan(t[0]) else f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"

    temporal = any(not np.isnan(s["tpt"][0]) for s in summary.values())
    head = ("| method | clips | deletion AUC ↓ [95% CI] | insertion AUC ↑ [95% CI] | "
            "S-PT, mean of clips ↑ [95% CI] | S-PT pooled |")
    rule = "| --- | ---: | --- | --- | --- | ---: |"
    if temporal:
        head += " T-PT ↑ [95% CI] | above-median mass in the true frames ↑ [95% CI] |"
        rule += " --- | --- |"
    lines = [head + " s / map | forward + backward passes / map |", rule + " ---: | ---: |"]
    names = [m for m in (order or []) if m in summary]
    names += sorted((m for m in summary if m not in names),
                    key=lambda m: -np.nan_to_num(summary[m]["spt"][0]))
    for m in names:
        s = summary[m]
        row = (f"| {m} | {s['clips']} | {ci(s['deletion'])} | {ci(s['insertion'])} | "
               f"{ci(s['spt'])} | {s['spt_pooled']:.3f} |")
        if temporal:
            row += f" {ci(s['tpt'])} | {ci(s['t_share'])} |"
        lines.append(row + f" {s['seconds']:.3f} | {s['forward']:.0f} + {s['backward']:.0f} |")
    return "\n".join(lines)


# The exact generator settings the committed network was trained with (pipeline/train.py): the
# same seed gives the same dataset, and its test split was held out from training.
SYNTH_ARGS = ["--per-class", "250", "--size", "128", "--frames", "24", "--camera-pan",
              "--decoy-fraction", "0.5"]


def ensure_data(data: Path, seed: int) -> Path:
    manifest = data / "test.jsonl"
    if not manifest.exists():
        print(f"generating the synthetic dataset into {data} ...", flush=True)
        subprocess.run([sys.executable, "-m", "pipeline.apps.synth", "--out", str(data),
                        "--seed", str(seed), *SYNTH_ARGS], check=True)
    return manifest


# (exact, approximation) pairs whose maps are compared voxel for voxel.
MAP_PAIRS = (("aosa", "aosa_approx"), ("aosa_sgl", "aosa_sgl_approx"))


def map_agreement(outputs: list[str], summary: dict[str, dict]) -> str:
    """For each (exact, approx) pair of the run: the rank correlation of the two maps of each
    clip (median and quartiles over clips) and the time ratio per map.

    Args:
        outputs: the run's ``--output`` (and a merged run's): maps are read from all of them.
        summary: :func:`summarise` of the rows.
    """
    lines = []
    for exact, approx in MAP_PAIRS:
        if exact not in summary or approx not in summary:
            continue
        maps: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
        for output in outputs:
            table = read_table(OutputPaths(output).saliency, ["clip_id", "method", "saliency"])
            if table is None:
                continue
            for cid, m, sal in zip(*(table.column(c).to_pylist() for c in
                                     ("clip_id", "method", "saliency")), strict=True):
                if m in (exact, approx) and m not in maps[cid]:
                    maps[cid][m] = np.asarray(sal, dtype=np.float32)
        rho = np.array([spearman(v[exact], v[approx]) for v in maps.values() if len(v) == 2])
        rho = rho[np.isfinite(rho)]
        if rho.size == 0:
            continue
        ratio = summary[approx]["seconds"] / summary[exact]["seconds"]
        lines.append(f"- `{approx}` vs `{exact}`: Spearman rank correlation of the maps, "
                     f"median {np.median(rho):.3f} (quartiles {np.quantile(rho, 0.25):.3f}–"
                     f"{np.quantile(rho, 0.75):.3f}, {rho.size} clips); time per map "
                     f"{ratio:.3f} × the exact one's ({1 / ratio:.1f}× faster)")
    return "\n".join(lines)


def spread_rows(manifest: Path, limit: int, out_dir: Path) -> Path:
    """A copy of ``limit`` rows spread evenly over the manifest (splits are sorted by class, so
    the first rows would be one class), in ``out_dir``; relative video paths made absolute."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for r in rows:
        if not Path(r["video"]).is_absolute():
            r["video"] = str((manifest.parent / r["video"]).resolve())
    limit = min(limit, len(rows))
    picked = [rows[i * len(rows) // limit] for i in range(limit)]
    path = out_dir / f"{limit}_of_{manifest.name}"
    path.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return path


def merged_rows(rows: list[dict], other: list[dict]) -> list[dict]:
    """``other``'s rows of the same clips (same ``clip_id``: video, start, length, stride) for
    methods ``rows`` lack, so methods of two runs are compared on the same clips."""
    clips = {r["clip_id"] for r in rows}
    have = {r["method"] for r in rows}
    return [r for r in other if r["clip_id"] in clips and r["method"] not in have]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=".cache/synth", help="synthetic dataset directory")
    ap.add_argument("--output", default="eval_out")
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--seed", type=int, default=0,
                    help="dataset seed (0: the training dataset, whose test split is held out)")
    ap.add_argument("--batch-size", default="16")
    ap.add_argument("--manifest", default=None,
                    help="evaluate this manifest instead of the held-out test split (e.g. the "
                         "temporal split written by pipeline.apps.synth --temporal/--composed)")
    ap.add_argument("--limit", type=int, default=None,
                    help="only N clips spread evenly over the split (costly methods)")
    ap.add_argument("--merge", default=None,
                    help="another evaluation's --output: its methods' rows for the same clips "
                         "join the table (methods of this run win)")
    args, beam_args = ap.parse_known_args(argv)
    manifest = Path(args.manifest) if args.manifest else ensure_data(Path(args.data), args.seed)
    if args.limit is not None:
        manifest = spread_rows(manifest, args.limit, Path(args.output))
    info = job.run(["--input", str(manifest), "--output", args.output,
                    "--model", "synth_small3d", "--methods", args.methods,
                    "--target", "label", "--batch-size", args.batch_size, *beam_args])
    rows = read_table(OutputPaths(args.output).metrics).to_pylist()
    methods = args.methods.split(",")
    if args.merge:
        rows += merged_rows(rows, read_table(OutputPaths(args.merge).metrics).to_pylist())
        methods += [m for m in DEFAULT_METHODS.split(",") if m not in methods]
    summary = summarise(rows)
    acc = next(iter(summary.values()))["accuracy"]
    c = info["counts"]
    text = (f"Synthetic split `{manifest}`: {c['clips_written']} clips explained "
            f"({c['clips_failed']} dead-lettered), network accuracy {acc:.3f}, "
            f"config {info['config_hash']}.\n\n"
            + markdown(summary, methods) + "\n")
    agreement = map_agreement([args.output, *([args.merge] if args.merge else [])], summary)
    if agreement:
        text += "\n" + agreement + "\n"
    print("\n" + text)
    Path(args.output, "evaluation.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
