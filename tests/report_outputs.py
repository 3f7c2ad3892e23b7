"""Small run outputs written directly as Parquet with the sink's schemas, for the report's
tests and its scale benchmark: the hive layout (``metrics/model=<m>/method=<meth>/``, the
partition columns not in the files) or the flat one."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.sink import ERROR_SCHEMA, METRICS_SCHEMA, saliency_schema

PARTITION = ("model", "method")


def metric_row(clip_id: str, method: str, model: str = "tiny", **values) -> dict:
    """A metrics/ row: every column null unless given (clip_id, method, model always set)."""
    row = {name: None for name in METRICS_SCHEMA.names}
    row.update(clip_id=clip_id, video=f"/nowhere/{clip_id}.avi", method=method, model=model,
               weights_sha256="w" * 64, config_hash="c" * 16, forward_passes=1,
               backward_passes=0, seconds=0.01)
    row.update(values)
    return row


def saliency_row(clip_id: str, method: str, saliency: np.ndarray, model: str = "tiny",
                 **values) -> dict:
    """A saliency/ row holding the (T, H, W) map."""
    row = {"clip_id": clip_id, "video": f"/nowhere/{clip_id}.avi", "start_frame": 0,
           "num_frames": saliency.shape[0], "frame_stride": 1, "method": method, "model": model,
           "weights_sha256": "w" * 64, "target_class": 0, "target_name": "zero",
           "target_source": "predicted", "map_shape": list(saliency.shape),
           "map_min": float(saliency.min()), "map_max": float(saliency.max()),
           "saliency": saliency.astype(np.float16).ravel(), "config_hash": "c" * 16}
    row.update(values)
    return row


def write_table(root: Path, name: str, schema: pa.Schema, rows: Sequence[dict],
                hive: bool = True, part: str = "part-0") -> None:
    """Write ``rows`` as ``root/name/`` in the hive (one file per model × method) or flat
    layout."""
    if not hive or name == "errors":
        if name != "errors":  # the flat layout (older runs) holds the partition columns
            schema = pa.schema([*schema, *(pa.field(p, pa.string()) for p in PARTITION)])
        (root / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(list(rows), schema), root / name / f"{part}.parquet")
        return
    inner = pa.schema([f for f in schema if f.name not in PARTITION])
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"]), []).append(r)
    for (model, method), rs in groups.items():
        d = root / name / f"model={urllib.parse.quote(model, safe='')}" / f"method={method}"
        d.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist([{k: v for k, v in r.items() if k not in PARTITION}
                                      for r in rs], inner)
        pq.write_table(table, d / f"{part}.parquet", row_group_size=64)


def write_output(root: Path, metrics: Sequence[dict], saliency: Sequence[dict],
                 errors: Sequence[dict] = (), hive: bool = True, part: str = "part-0") -> Path:
    """A whole run output: metrics/, saliency/ (maps of one shape) and errors/."""
    shape = saliency[0]["map_shape"]
    write_table(root, "metrics", METRICS_SCHEMA, metrics, hive, part)
    write_table(root, "saliency", saliency_schema(tuple(shape)), saliency, hive, part)
    write_table(root, "errors", ERROR_SCHEMA, errors, hive, part)
    return root
