"""1. The whole pipeline per clip ÷ the pure model cost of the same forwards.

    python -m benchmarks.pipeline_overhead [--model r3d_18 --frames 8 --size 56 --clips 3]

Writes ``--clips`` synthetic videos (MJPG .avi, 8 px larger than ``--size`` so that decoding
resizes and crops) and runs the real job on them — ``pipeline.job.run``: list → decode → flow →
tubes → AOSA → Parquet, ``--methods aosa --no-metrics --no-progress``, FnApiRunner in this
process. Before and after that job, in the same process, it runs plain ``model(batch)`` forwards
of the same count and batch sizes (per clip, from ``metrics/``'s ``forward_passes``: the clean
forward at batch 1, then the N masks at ``--batch-size``) on the same device and precision, and
takes their mean (so that a change of machine load during the run hits both sides alike).

Start-up (Beam set-up, the network built on the driver and on the worker) is paid once per run;
it is cancelled by running the job twice, on 1 clip and on ``--clips`` clips: the per-clip time
is (t_clips − t_1) / (clips − 1). The raw t_clips / clips is printed as well. Target: ≤ 1.10.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from benchmarks import common
from pipeline import job
from transforms.tubes import num_anchors

TARGET = 1.10


def write_videos(folder: Path, clips: int, frames: int, size: int) -> list[Path]:
    """``clips`` synthetic videos of ``frames`` frames, (size + 8) px square, MJPG .avi."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(clips):
        path = folder / f"clip{i:02d}.avi"
        side = size + 8
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (side, side))
        for frame in common.synthetic_clip(frames, side, seed=i):
            out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        out.release()
        paths.append(path)
    return paths


def run_job(args, videos: Path, out: Path) -> tuple[float, pd.DataFrame]:
    """Wall time of ``pipeline.job.run`` on the videos in ``videos``, and its metrics table."""
    argv = ["--input", str(videos), "--output", str(out), "--model", args.model,
            "--methods", "aosa", "--no-metrics", "--no-progress", "--device", args.device,
            "--precision", args.precision, "--batch-size", str(args.batch_size),
            "--size", str(args.size), "--num-frames", str(args.frames),
            "--runner", "FnApiRunner"]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    info = job.run(argv)
    seconds = time.perf_counter() - t0
    if info["counts"]["clips_failed"]:
        raise SystemExit(f"the job dead-lettered clips: {info['counts']}")
    return seconds, pd.read_parquet(out / "metrics")


def pure_forwards(scorer, forwards: list[int], frames: int, size: int, batch: int) -> float:
    """Seconds of plain forwards: per clip, 1 at batch 1 then ``n − 1`` at ``batch``."""
    x = torch.randn(batch, 3, frames, size, size, device=scorer.device)
    common.sync(scorer.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for n in forwards:
            scorer.logits(x[:1])
            for s in range(0, n - 1, batch):
                scorer.logits(x[:min(batch, n - 1 - s)])
    common.sync(scorer.device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = common.parser(__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=3, help="clips in the long run (default: 3)")
    args = ap.parse_args(argv)
    if args.clips < 2:
        raise SystemExit("--clips must be >= 2 (the per-clip time is a difference of two runs)")
    if args.threads:
        torch.set_num_threads(args.threads)
    scorer = common.load_scorer(args)
    stride = max(1, args.size // 14)  # the job's default
    print(common.header("1. the whole pipeline per clip ÷ the pure model cost", args,
                        clips=args.clips, methods="aosa",
                        stride=f"{stride} (N = {num_anchors(args.size, args.size, stride)})",
                        runner="FnApiRunner", metrics="off"), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidxai-bench-") as tmp:
        root = Path(tmp)
        write_videos(root / "one", 1, args.frames + 2, args.size)
        write_videos(root / "many", args.clips, args.frames + 2, args.size)
        pure_forwards(scorer, [2], args.frames, args.size, args.batch_size)  # warm-up
        for _ in range(args.repeats):  # pure forwards before and after the long job: drift
            t_one, _ = run_job(args, root / "one", root / "out1")
            forwards = [num_anchors(args.size, args.size, stride) + 1] * args.clips
            t_pure_a = pure_forwards(scorer, forwards, args.frames, args.size,
                                     args.batch_size)
            t_many, met = run_job(args, root / "many", root / "out")
            forwards = met["forward_passes"].astype(int).tolist()
            t_pure_b = pure_forwards(scorer, forwards, args.frames, args.size,
                                     args.batch_size)
            rows.append((t_one, t_many, (t_pure_a + t_pure_b) / 2,
                         float(met["seconds"].sum()), forwards))
    t_one, t_many, t_pure, t_aosa = (float(np.median([r[i] for r in rows])) for i in range(4))
    forwards = rows[0][4]
    per_clip = (t_many - t_one) / (args.clips - 1)
    pure = t_pure / args.clips
    ratio = per_clip / pure
    print(f"job on 1 clip {t_one:.2f} s, on {args.clips} clips {t_many:.2f} s; "
          f"forwards per clip {sorted(set(forwards))}")
    print(f"per clip: pipeline {per_clip:.2f} s (start-up cancelled), pure model "
          f"{pure:.2f} s (mean of a run before and one after the {args.clips}-clip job); raw "
          f"{t_many / args.clips:.2f} s per clip with start-up; AOSA's own time inside the "
          f"job (metrics/ seconds) {t_aosa / args.clips:.2f} s per clip")
    print(f"fixed cost of a run (the 1-clip job minus one clip's share) "
          f"{t_one - per_clip:.2f} s")
    print(f"pipeline / pure model = {ratio:.3f} (target <= {TARGET}: "
          f"{'met' if ratio <= TARGET else 'MISSED'}); raw with start-up "
          f"{t_many / args.clips / pure:.3f}", flush=True)
    return {"per_clip": per_clip, "pure": pure, "ratio": ratio, "t_one": t_one,
            "t_many": t_many}


if __name__ == "__main__":
    main()
