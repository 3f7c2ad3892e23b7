"""The sink: typed per-clip results and dead letters → Parquet tables.

``saliency/``: one row per clip × method, the map as ``fixed_shape_tensor(float16, [T, H, W])``.
``metrics/``:  one row per clip × method (joins to saliency on clip_id + method).
``errors/``:   one row per dead-lettered clip.
Column meanings are documented in the README. The only input is
:class:`~transforms.records.ClipResult` / :class:`~transforms.records.ErrorRecord`; the rows are
built here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.records import ClipResult, ErrorRecord

# A 16×224×224 float16 map is 1.6 MB: keep Parquet record batches small.
SALIENCY_BATCH = 8

ERROR_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video", pa.string()), ("stage", pa.string()),
    ("error_type", pa.string()), ("message", pa.string()),
])


def saliency_schema(num_frames: int, size: int) -> pa.Schema:
    """Schema of ``saliency/`` rows for maps of shape (num_frames, size, size)."""
    return pa.schema([
        ("clip_id", pa.string()), ("video", pa.string()), ("start_frame", pa.int32()),
        ("num_frames", pa.int32()), ("frame_stride", pa.int32()), ("method", pa.string()),
        ("model", pa.string()), ("weights_sha256", pa.string()),
        ("target_class", pa.int32()), ("target_name", pa.string()),
        ("target_source", pa.string()), ("map_shape", pa.list_(pa.int32())),
        ("map_min", pa.float32()), ("map_max", pa.float32()),
        ("saliency", pa.fixed_shape_tensor(pa.float16(), [num_frames, size, size])),
        ("config_hash", pa.string()),
    ])


METRICS_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video", pa.string()), ("method", pa.string()),
    ("model", pa.string()), ("weights_sha256", pa.string()),
    ("label", pa.int32()), ("label_name", pa.string()),
    ("label_prob", pa.float32()), ("predicted", pa.int32()), ("predicted_name", pa.string()),
    ("predicted_prob", pa.float32()), ("correct", pa.bool_()),
    ("target_class", pa.int32()), ("target_prob", pa.float32()),
    ("top5", pa.list_(pa.struct([("class", pa.int32()), ("name", pa.string()),
                                  ("prob", pa.float32())]))),
    ("deletion_auc", pa.float32()), ("insertion_auc", pa.float32()),
    ("deletion_curve", pa.list_(pa.float32())), ("insertion_curve", pa.list_(pa.float32())),
    ("spt_hits", pa.int32()), ("spt_frames", pa.int32()), ("spt_rate", pa.float32()),
    ("frame_range", pa.list_(pa.int32())), ("tpt_hit", pa.bool_()),
    ("t_mass_in_range", pa.float32()), ("t_above_median_share", pa.float32()),
    ("forward_passes", pa.int32()), ("backward_passes", pa.int32()), ("seconds", pa.float32()),
    ("metric_forward_passes", pa.int32()), ("metric_seconds", pa.float32()),
    ("config_hash", pa.string()),
])


@dataclass(frozen=True)
class RunInfo:
    """Per-run values written next to every row."""

    model: str
    weights_sha256: str
    config_hash: str
    frame_stride: int


def saliency_rows(result: ClipResult, info: RunInfo) -> list[dict]:
    """The ``saliency/`` rows of one clip (one per method)."""
    ref = result.ref
    return [{
        "clip_id": ref.clip_id, "video": ref.video, "start_frame": ref.start_frame,
        "num_frames": result.num_frames, "frame_stride": info.frame_stride,
        "method": m.method, "model": info.model, "weights_sha256": info.weights_sha256,
        "target_class": result.target.index, "target_name": result.target.name,
        "target_source": result.target_source, "map_shape": list(m.saliency.shape),
        "map_min": float(m.saliency.min()), "map_max": float(m.saliency.max()),
        "saliency": m.saliency.astype(np.float16).ravel(),
        "config_hash": info.config_hash,
    } for m in result.methods]


def metrics_rows(result: ClipResult, info: RunInfo) -> list[dict]:
    """The ``metrics/`` rows of one clip (one per method; metric columns null when off)."""
    ref, label = result.ref, result.label
    rows = []
    for m in result.methods:
        row = {
            "clip_id": ref.clip_id, "video": ref.video, "method": m.method,
            "model": info.model, "weights_sha256": info.weights_sha256,
            "label": None if label is None else label.index,
            "label_name": None if label is None else label.name,
            "label_prob": None if label is None else label.prob,
            "predicted": result.predicted.index, "predicted_name": result.predicted.name,
            "predicted_prob": result.predicted.prob,
            "correct": None if label is None else label.index == result.predicted.index,
            "target_class": result.target.index, "target_prob": result.target.prob,
            "top5": [{"class": c.index, "name": c.name, "prob": c.prob} for c in result.top5],
            "forward_passes": m.forward_passes, "backward_passes": m.backward_passes,
            "seconds": m.seconds, "config_hash": info.config_hash,
        }
        mm = m.metrics
        row.update({
            "deletion_auc": mm and mm.deletion_auc, "insertion_auc": mm and mm.insertion_auc,
            "deletion_curve": mm and list(mm.deletion_curve),
            "insertion_curve": mm and list(mm.insertion_curve),
            "spt_hits": mm and mm.spt_hits, "spt_frames": mm and mm.spt_frames,
            "spt_rate": mm and mm.spt_rate,
            "frame_range": None if result.frame_range is None else list(result.frame_range),
            "tpt_hit": mm and mm.tpt_hit, "t_mass_in_range": mm and mm.t_mass_in_range,
            "t_above_median_share": mm and mm.t_above_median_share,
            "metric_forward_passes": mm and mm.forward_passes,
            "metric_seconds": mm and mm.seconds,
        })
        rows.append(row)
    return rows


def error_row(error: ErrorRecord) -> dict:
    """The ``errors/`` row of a dead letter."""
    return {"clip_id": error.clip_id, "video": error.video, "stage": error.stage,
            "error_type": error.error_type, "message": error.message}


@dataclass(frozen=True)
class OutputPaths:
    """Where a run writes (all under ``--output``, a directory or FileSystems URI)."""

    root: str

    def join(self, *parts: str) -> str:
        return FileSystems.join(self.root, *parts)

    @property
    def saliency(self) -> str:
        return self.join("saliency")

    @property
    def metrics(self) -> str:
        return self.join("metrics")

    @property
    def errors(self) -> str:
        return self.join("errors")

    @property
    def run_json(self) -> str:
        return self.join("run.json")

    def tables(self) -> list[str]:
        return [self.saliency, self.metrics, self.errors]


class WriteResults(beam.PTransform):
    """``(results, errors) | WriteResults(...)``: the three Parquet tables of a run.

    ``metrics/`` is always written: besides the metrics it holds each method's cost (passes,
    seconds) and the clip's classes; its metric columns are null when the run skipped them.

    Args:
        paths: the output locations.
        info: values written next to every row.
        map_shape: (T, H, W) of every map (the tensor column's fixed shape).
    """

    def __init__(self, paths: OutputPaths, info: RunInfo, map_shape: tuple[int, int, int]
                 ) -> None:
        super().__init__()
        self.paths, self.info, self.map_shape = paths, info, map_shape

    def expand(self, pcolls):
        results, errors = pcolls
        info = self.info
        t, h, w = self.map_shape
        if h != w:
            raise ValueError(f"maps must be square, got {self.map_shape}")
        (results
         | "SaliencyRows" >> beam.FlatMap(saliency_rows, info)
         | "WriteSaliency" >> beam.io.WriteToParquet(
             FileSystems.join(self.paths.saliency, "part"), saliency_schema(t, h),
             file_name_suffix=".parquet", record_batch_size=SALIENCY_BATCH))
        (results
         | "MetricsRows" >> beam.FlatMap(metrics_rows, info)
         | "WriteMetrics" >> beam.io.WriteToParquet(
             FileSystems.join(self.paths.metrics, "part"), METRICS_SCHEMA,
             file_name_suffix=".parquet", num_shards=1, record_batch_size=256))
        (errors
         | "ErrorRows" >> beam.Map(error_row)
         | "WriteErrors" >> beam.io.WriteToParquet(
             FileSystems.join(self.paths.errors, "part"), ERROR_SCHEMA,
             file_name_suffix=".parquet", num_shards=1))
        return pcolls
