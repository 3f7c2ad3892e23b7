"""9. The same job on Apache Flink (parallelism 2) and on the local FnApiRunner, side by side.

    python -m benchmarks.flink_vs_local [--model r3d_18 --frames 8 --size 56 --clips 8]

Writes ``--clips`` synthetic videos and runs the real job on them (``pipeline.job.run``,
``--methods aosa --stride S --no-metrics --no-progress``) three times per repeat, each into a
fresh output: on FnApiRunner in this process (one SDK worker, torch's own threads), on
FnApiRunner with two worker processes (``--direct_running_mode=multi_processing
--direct_num_workers=2``, the thread budget splitting the cores), and on Flink —
Beam's Flink job server (:mod:`pipeline.apps.flink`, the embedded mini-cluster) with
``--runner PortableRunner --job_endpoint``, ``--parallelism 2`` and SDK workers from an
EXTERNAL worker pool, each with ``--threads cores / 2`` (so the two do not oversubscribe the
cores). The job server and the worker pool are started once, before the timed runs; their
start-up is printed on its own line. The Flink run's wall time includes what every Flink job
pays: job submission, the mini-cluster's start, and two fresh SDK worker processes that import
torch and build the network. The maps of the two runs are compared (bit-equal) before any
ratio is printed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.pipeline_overhead import write_videos
from pipeline import job
from pipeline.apps import flink
from pipeline.outputs import iter_tables

PARALLELISM = 2


def saliency(out: Path) -> dict[str, np.ndarray]:
    """clip_id → stored map."""
    return {r["clip_id"]: np.asarray(r["saliency"]) for _, t in iter_tables(str(out / "saliency"))
            for r in t.to_pylist()}


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8, help="synthetic videos (default: 8)")
    ap.add_argument("--stride", type=int, default=8,
                    help="AOSA anchor stride in px (default: 8, N = (size / 8)^2 masks)")
    args = ap.parse_args(argv)
    if args.device != "cpu":
        print("== 7. flink_vs_local: CPU only (the SDK workers here have no GPU), skipped")
        return
    threads = max(1, (os.cpu_count() or 1) // PARALLELISM)
    print(common.header("Flink (mini-cluster, parallelism 2) vs FnApiRunner: the same job",
                        args, clips=args.clips, stride=args.stride,
                        flink_worker_threads=threads), flush=True)
    jar = flink.job_server_jar()
    with tempfile.TemporaryDirectory(prefix="vidxai-flink-bench-") as tmp:
        work = Path(tmp)
        videos = write_videos(work / "videos", args.clips, args.frames, args.size)
        base = ["--input", str(videos[0].parent), "--model", args.model,
                "--num-frames", str(args.frames), "--size", str(args.size),
                "--stride", str(args.stride), "--batch-size", str(args.batch_size),
                "--precision", args.precision, "--device", "cpu", "--methods", "aosa",
                "--no-metrics", "--no-progress"]
        times: dict[str, list[float]] = {"local": [], "local2": [], "flink": []}
        with flink.worker_pool() as pool, flink.job_server(jar) as server:
            print(f"start-up (once, not in the times below): Flink job server "
                  f"{server.startup_seconds:.1f} s, SDK worker pool {pool.startup_seconds:.1f} s",
                  flush=True)
            runs = {
                "local": base + (["--threads", str(args.threads)] if args.threads else []),
                "local2": base + ["--direct_running_mode=multi_processing",
                                  f"--direct_num_workers={PARALLELISM}"],
                "flink": base + ["--threads", str(threads), "--runner", "PortableRunner",
                                 "--job_endpoint", server.endpoint,
                                 "--parallelism", str(PARALLELISM),
                                 "--environment_type", "EXTERNAL",
                                 "--environment_config", pool.endpoint],
            }
            for r in range(args.repeats):
                for name, run_args in runs.items():
                    out = work / f"{name}-{r}"
                    t0 = time.perf_counter()
                    info = job.run([*run_args, "--output", str(out)])
                    times[name].append(time.perf_counter() - t0)
                    if info["counts"]["clips_written"] != args.clips:
                        raise SystemExit(f"{name}: {info['counts']}, expected {args.clips} "
                                         "clips written")
        a, b, c = (saliency(work / f"{n}-0") for n in ("flink", "local", "local2"))
        equal = a.keys() == b.keys() == c.keys() and all(
            np.array_equal(a[k], b[k]) and np.array_equal(a[k], c[k]) for k in a)
        print(f"maps: {len(a)} clips, Flink == FnApiRunner (1 and 2 workers) bit for bit: "
              f"{'yes' if equal else 'NO'}")
        if not equal:
            raise SystemExit("the Flink and local maps differ: no ratio is printed")
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, text in (("local", "FnApiRunner, 1 worker (this process)"),
                       ("local2", f"FnApiRunner, {PARALLELISM} worker processes"),
                       ("flink", f"Flink, parallelism {PARALLELISM} (worker pool)")):
        print(f"{text:<40} {med[name]:7.1f} s  {med[name] / args.clips:5.2f} s/clip")
    print(f"flink / local (1 worker) = {common.fmt_ratio(med['flink'], med['local'])}, "
          f"flink / local ({PARALLELISM} workers) = "
          f"{common.fmt_ratio(med['flink'], med['local2'])} (wall time, median of "
          f"{args.repeats})")


if __name__ == "__main__":
    main()
