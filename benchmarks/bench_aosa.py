"""AOSA cost against the pure model cost, and peak memory against N, measured side by side.

    .venv/bin/python benchmarks/bench_aosa.py [--model i3d_kinetics400] [--precision bf16]

1. Time: for one clip, exact AOSA (N masks + 1 base forward) versus the same number of plain
   forwards of unoccluded clips in the same batch size: the ratio is AOSA's overhead
   (rasterising masks, applying them, aggregating). Also the stages before scoring
   (decode is excluded: it is I/O) — flow and tubes — per clip.
2. Memory: in a fresh process, the growth of resident memory while AOSA runs (peak during the
   run, VmHWM after resetting it, minus the resident memory before) for N = 49, 196, 784 masks
   at the same batch size and 16 × 224 × 224 clips. With masks rasterised on the fly it must not
   grow with N. The network there is ``tiny`` by default (the buffers AOSA adds do not depend on
   the network, and a tiny one makes N = 784 affordable); ``--memory-model`` changes it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from transforms.flow import farneback_flow
from transforms.methods import get_method
from transforms.scoring import load_scorer
from transforms.tubes import build_tubes


def synthetic_clip(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """A textured clip with a moving square: uint8 (T, size, size, 3)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    clip = np.stack([np.roll(base, 2 * t, axis=1) for t in range(frames)])
    for t in range(frames):
        x = 10 + 4 * t
        clip[t, size // 3:size // 3 + size // 6, x:x + size // 6] = (255, 40, 40)
    return clip


def time_one(model: str, precision: str, stride: int, batch: int, repeats: int) -> dict:
    scorer = load_scorer(model, None, "cpu", precision)
    spec = scorer.spec
    clip = synthetic_clip(spec.num_frames, spec.input_size)
    t0 = time.perf_counter()
    flow = farneback_flow(clip)
    t_flow = time.perf_counter() - t0
    t0 = time.perf_counter()
    tubes = build_tubes(flow, stride, (2 * stride, 2 * stride), 3)
    t_tubes = time.perf_counter() - t0
    x = scorer.to_input(clip)
    n = tubes.num_masks + 1
    aosa = get_method("aosa")
    aosa.explain(scorer, x, 0, tubes, batch)  # warm-up
    pure, full = [], []
    for _ in range(repeats):  # interleaved, so that machine noise hits both alike
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            b = min(batch, n - s)
            scorer.target_scores(x.unsqueeze(0).expand(b, -1, -1, -1, -1).contiguous(), 0)
        pure.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        aosa.explain(scorer, x, 0, tubes, batch)
        full.append(time.perf_counter() - t0)
    return {"model": model, "precision": precision, "N": tubes.num_masks, "batch": batch,
            "flow_s": t_flow, "tubes_s": t_tubes, "pure_forward_s": float(np.median(pure)),
            "aosa_s": float(np.median(full)),
            "overhead": float(np.median(full) / np.median(pure) - 1)}


def _status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def peak_memory_child(model: str, precision: str, stride: int, batch: int) -> None:
    torch.set_num_threads(2)
    scorer = load_scorer(model, None, "cpu", precision)
    clip = synthetic_clip(16, 224)
    tubes = build_tubes(farneback_flow(clip), stride, (2 * stride, 2 * stride), 3)
    x = scorer.to_input(clip)
    aosa = get_method("aosa")
    small = build_tubes(farneback_flow(clip[:2]), 112, (16, 16), 0)
    aosa.explain(scorer, x[:, :2], 0, small, batch)  # warm-up: allocator and kernels
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM (the peak) to the current RSS
        fh.write("5")
    aosa.explain(scorer, x, 0, tubes, batch)
    print(json.dumps({"N": tubes.num_masks, "rss_before_mb": before,
                      "growth_mb": _status_mb("VmHWM") - before}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="r3d_18")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-model", default="tiny")
    ap.add_argument("--child", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        peak_memory_child(args.model, args.precision, args.child[0], args.child[1])
        return
    torch.set_num_threads(2)
    size = load_scorer(args.model, None, "cpu", args.precision).spec.input_size
    r = time_one(args.model, args.precision, size // 14, args.batch_size, args.repeats)
    print(f"{r['model']} {r['precision']}: N = {r['N']}, batch {r['batch']}")
    print(f"  flow {r['flow_s']:.3f} s, tubes {r['tubes_s']:.3f} s per clip")
    print(f"  {r['N'] + 1} plain forwards {r['pure_forward_s']:.2f} s | exact AOSA "
          f"{r['aosa_s']:.2f} s | overhead over the pure model cost {100 * r['overhead']:+.1f} %")
    print(f"memory growth while AOSA runs ({args.memory_model}, 16 x 224 x 224, batch "
          f"{args.batch_size}; one fresh process each):")
    for stride in (32, 16, 8):
        res = subprocess.run([sys.executable, __file__, "--model", args.memory_model,
                              "--precision", "fp32", "--child", str(stride),
                              str(args.batch_size)], capture_output=True, text=True, check=True)
        m = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  N = {m['N']:>4}: +{m['growth_mb']:.0f} MB over {m['rss_before_mb']:.0f} MB")


if __name__ == "__main__":
    main()
