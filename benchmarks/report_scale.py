"""Report time and peak memory as the number of metrics rows grows (synthetic outputs).

    python benchmarks/report_scale.py [--rows 10000,40000] [--dir /tmp/vidxai_report_scale]

For each size, writes an output in the hive layout — 4 methods × rows/4 clips of 4 classes,
29-point curves, S-PT values, and a 8 × 16 × 16 saliency map for every row — then runs the
report (best and worst clip pictured, with animations) in a fresh process and prints its wall
time and peak resident memory (``resource.getrusage``), and the resident memory of the same
process after its imports, before the report started.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.sink import METRICS_SCHEMA, saliency_schema  # noqa: E402

METHODS = ("aosa", "osa", "gradcam", "center")
SHAPE = (8, 16, 16)


def method_tables(clips: int, method: str, seed: int) -> tuple[pa.Table, pa.Table]:
    """The metrics and saliency rows of one method (without the model / method columns)."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:016x}" for i in range(clips)]
    label = np.arange(clips, dtype=np.int32) % 4
    pred = np.where(rng.random(clips) < 0.9, label, (label + 1) % 4).astype(np.int32)
    dele = rng.beta(2, 6, clips).astype(np.float32)
    ins = rng.beta(6, 2, clips).astype(np.float32)
    x = np.linspace(0, 1, 29, dtype=np.float32)
    del_curve = np.exp(-x[None] / np.maximum(dele[:, None], 0.05))
    ins_curve = 1 - np.exp(-x[None] / np.maximum(1 - ins[:, None], 0.05))
    frames = np.full(clips, 16, np.int32)
    hits = rng.integers(0, 17, clips).astype(np.int32)
    columns = {
        "clip_id": ids, "video": [f"/data/v{i}.mp4" for i in range(clips)],
        "weights_sha256": ["a" * 64] * clips, "label": label,
        "label_name": [f"class{v}" for v in label], "label_prob": rng.random(clips),
        "predicted": pred, "predicted_name": [f"class{v}" for v in pred],
        "predicted_prob": rng.random(clips), "correct": pred == label, "target_class": label,
        "target_prob": rng.random(clips), "deletion_auc": dele, "insertion_auc": ins,
        "deletion_curve": pa.FixedSizeListArray.from_arrays(del_curve.ravel(), 29)
        .cast(pa.list_(pa.float32())),
        "insertion_curve": pa.FixedSizeListArray.from_arrays(ins_curve.ravel(), 29)
        .cast(pa.list_(pa.float32())),
        "spt_hits": hits, "spt_frames": frames, "spt_rate": hits / frames,
        "forward_passes": np.full(clips, 257, np.int32),
        "backward_passes": np.zeros(clips, np.int32),
        "seconds": rng.random(clips).astype(np.float32),
        "config_hash": ["c" * 16] * clips,
    }
    maps = rng.random((clips, *SHAPE), dtype=np.float32).astype(np.float16)
    columns.update({
        "start_frame": np.zeros(clips, np.int32), "num_frames": np.full(clips, SHAPE[0], np.int32),
        "frame_stride": np.ones(clips, np.int32), "target_name": columns["label_name"],
        "target_source": ["label"] * clips, "map_shape": [list(SHAPE)] * clips,
        "map_min": maps.min(axis=(1, 2, 3)).astype(np.float32),
        "map_max": maps.max(axis=(1, 2, 3)).astype(np.float32), "encoding": ["float16"] * clips,
        "pool": [[1, 1, 1]] * clips, "run_id": ["r" * 8] * clips,
        "saliency": pa.FixedShapeTensorArray.from_numpy_ndarray(maps)})
    return (_table(METRICS_SCHEMA, columns, clips),
            _table(saliency_schema(SHAPE, "float16"), columns, clips))


def _table(schema: pa.Schema, columns: dict, rows: int) -> pa.Table:
    """The sink's own schema without the partition columns, filled from ``columns`` (nulls
    where a column has no synthetic value), so the files match what the pipeline writes."""
    schema = pa.schema([f for f in schema if f.name not in ("model", "method")])
    return pa.table({f.name: (columns[f.name] if isinstance(columns[f.name], pa.Array)
                              else pa.array(columns[f.name], f.type)) if f.name in columns
                     else pa.nulls(rows, f.type) for f in schema}, schema=schema)


def write(out: Path, rows: int) -> None:
    clips = rows // len(METHODS)
    for k, method in enumerate(METHODS):
        metrics, saliency = method_tables(clips, method, k)
        for name, table, group in (("metrics", metrics, 4096), ("saliency", saliency, 256)):
            d = out / name / "model=synth_small3d" / f"method={method}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, d / "part-0.parquet", row_group_size=group)


def measure(out: str) -> None:
    """In this (fresh) process: import, note the resident memory, run the report, print."""
    import models.registry  # noqa: F401  (torch: pictures decode frames through it)
    from pipeline.apps.report import cli  # noqa: F401 - imports counted before the start
    from pipeline.apps.report.plots import plt  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    code = cli.main(["--output", out])
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"code": code, "seconds": seconds, "rss_after_imports_mb": before,
                      "peak_rss_mb": peak}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="10000,40000")
    ap.add_argument("--dir", default="/tmp/vidxai_report_scale")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        measure(a.measure)
        return 0
    print("| metrics rows | clips | maps on disk | report time | resident after imports | "
          "peak resident |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for rows in (int(r) for r in a.rows.split(",")):
        out = Path(a.dir) / f"rows_{rows}"
        if not (out / "metrics").exists():
            write(out, rows)
        size = sum(p.stat().st_size for p in (out / "saliency").rglob("*.parquet")) / 2**20
        res = subprocess.run([sys.executable, __file__, "--measure", str(out)], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"| {rows} | {rows // len(METHODS)} | {size:.0f} MB | {r['seconds']:.1f} s | "
              f"{r['rss_after_imports_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
