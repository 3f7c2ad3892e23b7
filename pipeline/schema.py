"""Arrow schemas of the three Parquet outputs, and the row builders that fill them.

``saliency/``: one row per clip × method, the map as ``fixed_shape_tensor(float16, [T, H, W])``.
``metrics/``:  one row per clip × method (joins to saliency on clip_id + method).
``errors/``:   one row per dead-lettered clip.
Column meanings are documented in the README.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

ERROR_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video", pa.string()), ("stage", pa.string()),
    ("error_type", pa.string()), ("message", pa.string()),
])


def saliency_schema(num_frames: int, size: int) -> pa.Schema:
    """Schema of ``saliency/`` rows for maps of shape (num_frames, size, size)."""
    return pa.schema([
        ("clip_id", pa.string()), ("video", pa.string()), ("start_frame", pa.int32()),
        ("num_frames", pa.int32()), ("frame_stride", pa.int32()), ("method", pa.string()),
        ("model", pa.string()), ("target_class", pa.int32()), ("target_name", pa.string()),
        ("target_source", pa.string()), ("map_shape", pa.list_(pa.int32())),
        ("map_min", pa.float32()), ("map_max", pa.float32()),
        ("saliency", pa.fixed_shape_tensor(pa.float16(), [num_frames, size, size])),
        ("config_hash", pa.string()),
    ])


METRICS_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video", pa.string()), ("method", pa.string()),
    ("model", pa.string()), ("label", pa.int32()), ("label_name", pa.string()),
    ("label_prob", pa.float32()), ("predicted", pa.int32()), ("predicted_name", pa.string()),
    ("predicted_prob", pa.float32()), ("correct", pa.bool_()),
    ("target_class", pa.int32()), ("target_prob", pa.float32()),
    ("top5", pa.list_(pa.struct([("class", pa.int32()), ("name", pa.string()),
                                  ("prob", pa.float32())]))),
    ("deletion_auc", pa.float32()), ("insertion_auc", pa.float32()),
    ("deletion_curve", pa.list_(pa.float32())), ("insertion_curve", pa.list_(pa.float32())),
    ("spt_hits", pa.int32()), ("spt_frames", pa.int32()), ("spt_rate", pa.float32()),
    ("forward_passes", pa.int32()), ("backward_passes", pa.int32()), ("seconds", pa.float32()),
    ("metric_forward_passes", pa.int32()), ("metric_seconds", pa.float32()),
    ("config_hash", pa.string()),
])


def saliency_row(ref, frames_shape, result, res, run_info: dict,
                 name: Callable[[int], str]) -> dict:
    """A ``saliency/`` row (``res`` is one MethodResult of ``result``, a ClipResult)."""
    sal = res.saliency
    return {
        "clip_id": ref.clip_id, "video": ref.video, "start_frame": ref.start_frame,
        "num_frames": int(frames_shape[0]), "frame_stride": run_info["frame_stride"],
        "method": res.method, "model": run_info["model"],
        "target_class": result.target, "target_name": name(result.target),
        "target_source": result.target_source, "map_shape": list(sal.shape),
        "map_min": float(sal.min()), "map_max": float(sal.max()),
        "saliency": sal.astype(np.float16).ravel(),
        "config_hash": run_info["config_hash"],
    }


def metrics_row(ref, result, res, run_info: dict, name: Callable[[int], str]) -> dict:
    """A ``metrics/`` row."""
    m, label = res.metrics, ref.label
    return {
        "clip_id": ref.clip_id, "video": ref.video, "method": res.method,
        "model": run_info["model"], "label": label,
        "label_name": None if label is None else name(label),
        "label_prob": result.label_prob, "predicted": result.predicted,
        "predicted_name": name(result.predicted), "predicted_prob": result.predicted_prob,
        "correct": None if label is None else bool(label == result.predicted),
        "target_class": result.target, "target_prob": result.target_prob,
        "top5": [{"class": c, "name": name(c), "prob": p} for c, p in result.top5],
        "deletion_auc": m.get("deletion_auc"), "insertion_auc": m.get("insertion_auc"),
        "deletion_curve": m.get("deletion_curve"), "insertion_curve": m.get("insertion_curve"),
        "spt_hits": m.get("spt_hits"), "spt_frames": m.get("spt_frames"),
        "spt_rate": m.get("spt_rate"),
        "forward_passes": res.forward_passes, "backward_passes": res.backward_passes,
        "seconds": res.seconds, "metric_forward_passes": m.get("metric_forward_passes"),
        "metric_seconds": m.get("metric_seconds"), "config_hash": run_info["config_hash"],
    }
