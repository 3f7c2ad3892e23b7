"""After a run: read the Parquet outputs back, write ``run.json``, print a summary table."""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.sink import OutputPaths


def read_table(directory: str, columns: list[str] | None = None) -> pa.Table | None:
    """All ``*.parquet`` files under ``directory`` as one table (None when there are none)."""
    pattern = FileSystems.join(directory, "*.parquet")
    paths = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    tables = []
    for path in paths:
        with FileSystems.open(path) as fh:
            tables.append(pq.read_table(pa.BufferReader(fh.read()), columns=columns))
    return pa.concat_tables(tables) if tables else None


def count_rows(directory: str) -> int:
    table = read_table(directory, columns=["clip_id"])
    return 0 if table is None else table.num_rows


def versions() -> dict:
    import apache_beam
    import cv2
    import numpy
    import torch

    return {"python": platform.python_version(), "apache_beam": apache_beam.__version__,
            "torch": torch.__version__, "opencv": cv2.__version__, "numpy": numpy.__version__,
            "pyarrow": pa.__version__}


def counts_from_outputs(out: OutputPaths) -> dict:
    """Clip counts read back from the written tables (the truth, whatever the runner said)."""
    sal = read_table(out.saliency, columns=["clip_id"])
    written = 0 if sal is None else len(set(sal.column("clip_id").to_pylist()))
    failed = count_rows(out.errors)
    return {"clips_written": written, "clips_failed": failed}


def write_run_json(out: OutputPaths, info: dict) -> None:
    with FileSystems.create(out.run_json) as fh:
        fh.write(json.dumps(info, indent=2, sort_keys=True, default=str).encode())


def summary_table(out: OutputPaths) -> str:
    """Per-method means of the metrics table, plus the error list, as plain text."""
    lines = []
    metrics = read_table(out.metrics)
    if metrics is not None and metrics.num_rows:
        rows = metrics.to_pylist()
        by_method = defaultdict(list)
        for r in rows:
            by_method[r["method"]].append(r)
        lines.append(f"{'method':<10} {'clips':>5} {'deletion':>9} {'insertion':>9} "
                     f"{'S-PT':>6} {'s/clip':>7} {'fwd/clip':>8}")
        for method, rs in sorted(by_method.items()):
            spt = [r["spt_rate"] for r in rs if r["spt_rate"] is not None]
            lines.append(
                f"{method:<10} {len(rs):>5} {_mean(r['deletion_auc'] for r in rs):>9.3f} "
                f"{_mean(r['insertion_auc'] for r in rs):>9.3f} "
                f"{(_mean(spt) if spt else float('nan')):>6.3f} "
                f"{_mean(r['seconds'] for r in rs):>7.2f} "
                f"{_mean(r['forward_passes'] for r in rs):>8.0f}")
        lines.append("")
        lines.append(f"{'clip':<40} {'predicted (prob)':<36} {'target':<24}")
        seen = set()
        for r in rows:
            if r["clip_id"] in seen:
                continue
            seen.add(r["clip_id"])
            video = r["video"][-40:]
            top = ", ".join(f"{t['name']} {t['prob']:.2f}" for t in r["top5"][:3])
            lines.append(f"{video:<40} {top:<36} {r['target_class']}")
    errors = read_table(out.errors)
    if errors is not None and errors.num_rows:
        lines.append("")
        lines.append("dead letters:")
        for e in errors.to_pylist():
            lines.append(f"  {e['video']} [{e['stage']}] {e['error_type']}: {e['message']}")
    return "\n".join(lines)


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
