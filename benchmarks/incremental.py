"""Incremental AOSA (``--incremental``, exact and approximate) against full forwards.

    python -m benchmarks.incremental [--models r3d_18,synth_small3d,i3d_kinetics400]
        [--motion static,pan] [--batch-size 8] [--limit N] [--threshold 0.6]
        [--keep 1,0.99,0.9] [--device cpu]

``--keep`` lists the executor's projective-field thresholds (1: exact; below 1 the
approximate mode of :func:`models.incremental.threshold_region`); each is one row, with the
map's Spearman rank correlation to the full-forward map. Target: ≥ 2× with Spearman ≥ 0.99.

For each network and clip: exact AOSA's N integrated tube masks (anchors every size/14 px,
boxes 2 × that, K = 3: N = 196 at 112 px with 16-px boxes, as the paper) scored through the
perturbation engine with full forwards (N + 1 forwards: the clean clip and the N masked ones)
and with the incremental executor (its clean pass, which records every activation, and the N
masked clips), in one process, interleaved, same batch size and threads, under
``torch.inference_mode``. Prints the seconds of both (wall and process CPU time: the machine
is shared, and CPU time varies less with other jobs' load; it also counts OpenMP threads
spinning), the speed-up, the share of convolution MACs the executor did not compute, and the
largest difference between the two maps over the map's largest magnitude.

Clips (synthetic, so the run needs no files): ``static`` — a textured still background with
one square moving right 3 px per frame (most tubes stay put); ``pan`` — the whole frame
translating 3 px per frame (every tube sweeps 45 px over 16 frames: the case where
incremental inference pays least). Networks run with seeded random weights (the cost does not
depend on the weights; ``synth_small3d`` loads its committed ones). No test runs this file.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from datetime import datetime, timezone

import numpy as np
import torch
from scipy.stats import spearmanr

import models  # noqa: F401  (registers the networks)
import models.i3d  # noqa: F401
import models.small3d  # noqa: F401
import models.torchvision_video  # noqa: F401
from benchmarks import common
from models.incremental import DEFAULT_GRID
from models.registry import build_network, get_spec
from pipeline.apps import footage
from transforms.decode import decode_clip, video_frame_count
from transforms.masks import tube_mask_batches
from transforms.methods.aosa import aggregate
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer, resolve_device, resolve_precision
from transforms.tubes import tubes_from_frames

TARGET_SPEEDUP = 2.0
TARGET_SPEARMAN = 0.99
SIZES = {"r3d_18": 112, "synth_small3d": 64, "i3d_kinetics400": 224, "tiny": 32,
         "mc3_18": 112, "r2plus1d_18": 112}


def synthetic_clip(frames: int, size: int, motion: str, seed: int = 0) -> np.ndarray:
    """uint8 (T, size, size, 3): a textured background, still or panning 3 px per frame,
    with a red square moving right 3 px per frame."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 255, (size // 4 + 1, size // 4 + 1, 3), dtype=np.uint8)
    base = np.kron(texture, np.ones((4, 4, 1), dtype=np.uint8))[:size, :size]
    clip = []
    for t in range(frames):
        frame = np.roll(base, 3 * t, axis=1) if motion == "pan" else base.copy()
        x0, y0, side = size // 8 + 3 * t, size // 3, size // 6
        frame[y0:y0 + side, x0:x0 + side] = (230, 40, 40)
        clip.append(frame)
    return np.stack(clip)


def make_scorer(name: str, precision: str, device: str = "cpu", pretrained: bool = False
                ) -> Scorer:
    """The network with seeded random weights, or its built-in pretrained ones
    (``synth_small3d`` always; others with ``pretrained``)."""
    spec = get_spec(name)
    if name == "synth_small3d" or (pretrained and spec.load_default_weights is not None):
        net = build_network(spec)
        spec.load_default_weights(net, None)
    else:
        net = build_network(spec, seed=0)
    device = resolve_device(device)
    return Scorer(net, spec, device, resolve_precision(precision, device))


def aosa_map(engine: PerturbationEngine, boxes: torch.Tensor, partners: torch.Tensor,
             limit: int) -> torch.Tensor:
    """Exact AOSA's occlusion (transforms/methods/aosa.py) of the first ``limit`` masks."""
    shape = engine.frame_shape
    masks = tube_mask_batches(boxes, partners, shape[1:], engine.batch_size,
                              torch.arange(limit, device=boxes.device))
    return aggregate(engine.perturb(masks, 0.0), limit, shape, engine.base_score, "mean",
                     engine.device)


def run_one(name: str, motion: str, kind: str, args: argparse.Namespace) -> dict:
    scorer = make_scorer(name, args.precision, args.device, args.pretrained)
    size = SIZES.get(name, scorer.spec.input_size)
    frames = 16
    stride = max(1, size // 14)
    if motion in ("static", "pan"):
        clip = synthetic_clip(frames, size, motion)
    else:  # a video file: its middle 16 frames
        path = (str(footage.fetch(motion.split(":", 1)[1], footage.default_dest()))
                if motion.startswith("footage:") else motion)
        start = max(0, video_frame_count(path) // 2 - frames // 2)
        clip = decode_clip(path, start, frames, size).frames
    tubes = tubes_from_frames(clip, stride, (2 * stride, 2 * stride), 3)
    if kind == "aosa_sgl":
        tubes = tubes.without_integration()
    boxes, partners = torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners)
    grid = tuple(int(v) for v in args.grid.split(","))
    n = tubes.num_masks if args.limit <= 0 else min(args.limit, tubes.num_masks)
    x = scorer.to_input(clip)
    boxes, partners = boxes.to(scorer.device), partners.to(scorer.device)
    with torch.inference_mode():
        target = int(scorer.logits(x[None]).argmax())
    keeps = [float(k) for k in args.keep.split(",")]
    modes = ["full", *(f"keep {k:g}" for k in keeps)]
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    maps, macs = {}, {}
    for rep in range(args.repeats):
        for mode in (modes if rep % 2 == 0 else modes[::-1]):
            common.sync(scorer.device)
            start, start_cpu = time.perf_counter(), time.process_time()
            engine = PerturbationEngine(scorer, x, target, "prob", args.batch_size,
                                        incremental=(mode != "full"))
            if mode != "full":
                engine._logits = scorer.incremental(x, args.threshold, grid,
                                                    keep=float(mode.split()[1]))
            maps[mode] = aosa_map(engine, boxes, partners, n).cpu()
            common.sync(scorer.device)
            times[mode].append(time.perf_counter() - start)
            cpu[mode].append(time.process_time() - start_cpu)
            if mode != "full":
                macs[mode] = engine._logits.executor.macs
    rows = []
    full, full_cpu = min(times["full"]), min(cpu["full"])
    for mode in modes[1:]:
        inc, inc_cpu = min(times[mode]), min(cpu[mode])
        rows.append({
            "network": name, "input": f"{frames}x{size}x{size}", "motion": motion,
            "kind": kind, "masks": n, "box": 2 * stride, "mode": mode, "full_s": full,
            "incremental_s": inc, "speedup": full / inc, "full_cpu": full_cpu,
            "inc_cpu": inc_cpu, "cpu_speedup": full_cpu / inc_cpu,
            "macs_saved": macs[mode].saved,
            "max_map_diff": float((maps["full"] - maps[mode]).abs().max()
                                  / max(float(maps["full"].abs().max()), 1e-30)),
            "spearman": float(spearmanr(maps["full"].flatten().numpy(),
                                        maps[mode].flatten().numpy()).statistic)})
    return rows


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="r3d_18,synth_small3d,i3d_kinetics400")
    p.add_argument("--motion", default="static,pan",
                   help="comma list of clips: static, pan (synthetic), footage:NAME (a real "
                   "clip of pipeline.apps.footage, fetched once) or video file paths")
    p.add_argument("--pretrained", action="store_true",
                   help="the networks' built-in pretrained weights where they have them (map "
                        "fidelity on a real network; timing does not depend on the weights)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=0, help="score only the first N masks (0: all)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.6)
    p.add_argument("--grid", default=",".join(map(str, DEFAULT_GRID)),
                   help="tiles per axis T,H,W of each layer")
    p.add_argument("--keep", default="1",
                   help="comma list of projective-field thresholds (share of each layer's "
                        "change recomputed; 1: exact), e.g. 1,0.99,0.95,0.9")
    p.add_argument("--masks", default="aosa", help="aosa (integrated tubes), aosa_sgl or both")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {machine()} · device "
          f"{args.device} · torch "
          f"{torch.__version__} · batch {args.batch_size} · {args.precision} · threshold "
          f"{args.threshold} · tiles {args.grid} · best of {args.repeats}")
    print(f"target: speed-up >= {TARGET_SPEEDUP:g}x with map Spearman >= {TARGET_SPEARMAN:g} "
          f"to full forwards; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("| network | input | clip | masks | N | box px | incremental | full: wall s (CPU s) "
          "| incremental: wall s (CPU s) | speed-up wall (CPU) | conv MACs saved "
          "| max map difference / map range | map Spearman | target |")
    print("| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: "
          "| ---: | --- |")
    rows = []
    for name in args.models.split(","):
        for motion in args.motion.split(","):
            for kind in args.masks.split(","):
                for r in run_one(name, motion, kind, args):
                    rows.append(r)
                    # The smaller of the wall and CPU speed-ups: either alone flatters
                    # when the machine's load changes between the timed runs.
                    speedup = min(r["speedup"], r["cpu_speedup"])
                    met = ("met" if speedup >= TARGET_SPEEDUP
                           and r["spearman"] >= TARGET_SPEARMAN else "missed")
                    print(f"| {r['network']} | {r['input']} | {r['motion']} | {r['kind']} "
                          f"| {r['masks']} | {r['box']} | {r['mode']} "
                          f"| {r['full_s']:.1f} ({r['full_cpu']:.1f}) "
                          f"| {r['incremental_s']:.1f} ({r['inc_cpu']:.1f}) "
                          f"| {r['speedup']:.2f}× ({r['cpu_speedup']:.2f}×) "
                          f"| {100 * r['macs_saved']:.0f} % | {r['max_map_diff']:.1e} "
                          f"| {r['spearman']:.4f} | {met} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
