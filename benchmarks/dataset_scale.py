"""Dataset-scale benchmark: clips/s for 1 and 2 workers, peak memory per worker against the
number of clips and the video's length, and the cost of a re-run that has nothing to do.

    python benchmarks/dataset_scale.py [--data DIR] [--clips 200] [--work DIR]

Each configuration runs ``run_pipeline.py`` in a fresh process; a sampler reads the resident
memory (``/proc/<pid>/status`` VmRSS, Linux) of that process and of every worker process it
starts, every 50 ms, and reports the largest per process. Prints a table with the date and the
machine; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = ["--model", "synth_small3d", "--methods", "aosa", "--no-metrics", "--no-progress",
       "--device", "cpu"]


def _children(pid: int) -> list[int]:
    """Child processes started by any thread of ``pid``."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return found


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PeakSampler(threading.Thread):
    """Largest resident memory of a process and of each of its descendants."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peaks, self.stop = pid, every, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            todo, seen = [self.pid], set()
            while todo:
                p = todo.pop()
                if p in seen:
                    continue
                seen.add(p)
                rss = _rss_mb(p)
                if rss is not None:
                    self.peaks[p] = max(self.peaks.get(p, 0.0), rss)
                todo += _children(p)
            time.sleep(self.every)


def run_once(argv: list[str]) -> dict:
    """One pipeline run in a fresh process: wall time, run.json, peak memory per process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    _, err = proc.communicate()
    sampler.stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({proc.returncode}): {err[-2000:]}")
    out = argv[argv.index("--output") + 1]
    info = json.loads(Path(out, "run.json").read_text())
    peaks = sorted(sampler.peaks.values(), reverse=True)
    return {"wall": wall, "info": info, "peak_driver": sampler.peaks.get(proc.pid, 0.0),
            "peak_workers": [p for pid, p in sampler.peaks.items() if pid != proc.pid],
            "peak_any": peaks[0] if peaks else 0.0}


def manifest(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def long_video(path: Path, frames: int) -> str:
    """A synthetic video of ``frames`` 128×128 frames (a disc moving on noise)."""
    import numpy as np

    from pipeline.apps.synth import write_video

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    video = np.empty((frames, 128, 128, 3), np.uint8)
    yy, xx = np.mgrid[:128, :128]
    for t in range(frames):
        video[t] = base
        cx, cy = 20 + (t * 3) % 88, 64 + int(30 * np.sin(t / 15))
        video[t][(xx - cx) ** 2 + (yy - cy) ** 2 < 144] = (255, 40, 40)
    write_video(path, video)
    return str(path)


def machine() -> str:
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/vidxai_synth",
                    help="a synthetic dataset (python -m pipeline.apps.synth --out DIR makes "
                         "one); its test.jsonl and train.jsonl clips are used")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--work", default=None, help="where outputs go (default: a temp dir)")
    ap.add_argument("--stride", type=int, default=16,
                    help="AOSA anchor stride at 64 px: 16 → N = 16 masks (light clips, start-up "
                         "and I/O weigh), 4 → N = 256 (the paper's density; scoring weighs)")
    a = ap.parse_args(argv)
    RUN.extend(["--stride", str(a.stride)])
    data = Path(a.data)
    rows = [json.loads(line) for name in ("test.jsonl", "train.jsonl")
            for line in (data / name).read_text().splitlines() if line.strip()]
    if len(rows) < a.clips:
        raise SystemExit(f"{data} has {len(rows)} clips, fewer than --clips {a.clips}")
    for r in rows:
        r["video"] = str((data / r["video"]).resolve()) if not os.path.isabs(r["video"]) \
            else r["video"]
    work = Path(a.work or tempfile.mkdtemp(prefix="vidxai-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    few = manifest(work / "few.jsonl", rows[:a.clips // 4])
    many = manifest(work / "many.jsonl", rows[:a.clips])

    print(f"vidxai dataset-scale benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    from models.registry import get_spec

    spec = get_spec("synth_small3d")
    print(f"settings: {' '.join(RUN)} ({spec.num_frames} frames × {spec.input_size} px), "
          f"clips of {data}\n")
    results = []

    def record(name: str, argv: list[str]) -> dict:
        r = run_once(argv)
        c = r["info"]["counts"]
        k = r["info"]["counters"]
        explained = c["clips_written"]
        per = r["wall"] / explained if explained else float("nan")
        workers = r["peak_workers"]
        explain = k.get("explain_ms", 0) / 1000 / explained if explained else float("nan")
        print(f"{name:<52} {c['clips_in']:>4} in {c['clips_written']:>4} written "
              f"{c['clips_skipped']:>4} skipped {r['wall']:>7.1f} s "
              f"{(explained / r['wall']):>5.2f} clips/s ({per:.2f} s/clip wall, "
              f"{explain:.2f} s/clip in the scoring stage)  "
              f"peak RSS: driver {r['peak_driver']:>5.0f} MB"
              + (f", workers {max(workers):>5.0f} MB (max of {len(workers)})" if workers
                 else ""), flush=True)
        results.append({"name": name, "wall": r["wall"], "counts": c, "counters": k,
                        "peak_driver": r["peak_driver"], "peak_workers": workers})
        return r

    threads = os.cpu_count() or 1
    record(f"{a.clips // 4} clips, 1 worker", ["--input", few, "--output", str(work / "a"),
                                                *RUN])
    record(f"{a.clips} clips, 1 worker", ["--input", many, "--output", str(work / "b"), *RUN])
    record(f"{a.clips} clips, 2 workers × {max(1, threads // 2)} threads (budget)",
           ["--input", many, "--output", str(work / "c"), *RUN,
            "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    record(f"{a.clips} clips, 2 workers × {threads} threads (oversubscribed)",
           ["--input", many, "--output", str(work / "d"), *RUN, "--threads", str(threads),
            "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    record(f"{a.clips} clips again into the same output (all skipped)",
           ["--input", many, "--output", str(work / "b"), *RUN])
    short = long_video(work / "short.avi", 400)
    longer = long_video(work / "long.avi", 4000)
    record("400-frame video, clips every 32 frames", ["--input", short, "--output",
                                                      str(work / "e"), *RUN,
                                                      "--clip-hop", "32"])
    record("4000-frame video, 12 clips spread over it",
           ["--input", longer, "--output", str(work / "f"), *RUN, "--clips-per-video", "12"])
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
