"""Two runs side by side: the same clips matched by (clip_id, method).

The candidate is the report's ``--output`` (narrowed by ``--candidate``), the baseline the
``--compare`` output (narrowed by ``--baseline``); deltas are candidate − baseline. Maps are
compared by rank correlation on at most ``map_clips`` clips per method, read a few at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from pipeline.apps.report.load import RunData
from pipeline.apps.report.read import Selection, read_maps
from pipeline.apps.report.stats import spearman
from pipeline.apps.report.tables import METRICS, paired_columns, per_clip, present_metrics

Key = tuple[str, str]  # (clip_id, method)


def by_method(run: RunData) -> dict[str, np.ndarray]:
    """Row indices of each method (all variants of the selection together)."""
    methods = run.strings("method")
    return {m: np.flatnonzero(methods == m) for m in sorted(set(methods))}


def metric_deltas(cand: RunData, base: RunData) -> list[dict]:
    """Per method present in both: matched clips, clips whose predicted class changed, and per
    metric the mean delta (candidate − baseline) with its interval, the share of clips that
    improved and the Wilcoxon p-value."""
    metrics = [m for m in METRICS if m in present_metrics(cand) and m in present_metrics(base)]
    a_rows, b_rows = by_method(cand), by_method(base)
    rows = []
    for method in sorted(a_rows.keys() & b_rows.keys()):
        ia, ib = a_rows[method], b_rows[method]
        pa_ = per_clip(cand, ia, "predicted_name", text=True)
        pb_ = per_clip(base, ib, "predicted_name", text=True)
        common = pa_.keys() & pb_.keys()
        rows.append({"method": method, "clips": len(common),
                     "prediction_changed": sum(pa_[c] != pb_[c] for c in common),
                     **paired_columns(cand, ia, base, ib, metrics, "improved")})
    return rows


def matched_keys(cand: RunData, base: RunData, map_clips: int) -> list[Key]:
    """(clip, method) keys in both runs: at most ``map_clips`` per method, a fixed pseudo-random
    choice (by a hash of the key), so re-running the report picks the same clips."""
    a, b = by_method(cand), by_method(base)
    keys: list[Key] = []
    for method in sorted(a.keys() & b.keys()):
        common = set(cand.strings("clip_id", a[method])) & set(base.strings("clip_id", b[method]))
        ranked = sorted(common, key=lambda c, m=method: hashlib.sha1(f"{c}|{m}".encode())
                        .hexdigest())
        keys += [(c, method) for c in ranked[:map_clips]]
    return keys


def map_correlations(cand_root: str, base_root: str, keys: Sequence[Key],
                     cand_sel: Sequence[Selection], base_sel: Sequence[Selection],
                     chunk: int = 16) -> dict[Key, float]:
    """Spearman rank correlation of the two runs' maps of each key, ``chunk`` keys at a time.

    Maps of different shapes (another --num-frames or --size) give NaN.
    """
    out: dict[Key, float] = {}
    for i in range(0, len(keys), chunk):
        part = list(keys[i:i + chunk])
        a = read_maps(cand_root, part, cand_sel)
        b = read_maps(base_root, part, base_sel)
        for key in part:
            if key in a and key in b and a[key][1].shape == b[key][1].shape:
                out[key] = spearman(a[key][1], b[key][1])
            else:
                out[key] = float("nan")
    return out


def correlation_rows(corr: dict[Key, float]) -> list[dict]:
    """Per method: clips compared, median, quartiles and minimum of the maps' rank
    correlation."""
    methods: dict[str, list[float]] = {}
    for (_, method), rho in corr.items():
        methods.setdefault(method, []).append(rho)
    rows = []
    for method, values in sorted(methods.items()):
        v = np.array(values)
        v = v[np.isfinite(v)]
        q = np.quantile(v, [0.25, 0.5, 0.75]) if v.size else [np.nan] * 3
        rows.append({"method": method, "clips": int(v.size), "rho_median": float(q[1]),
                     "rho_q1": float(q[0]), "rho_q3": float(q[2]),
                     "rho_min": float(v.min()) if v.size else float("nan")})
    return rows


def changed_most(corr: dict[Key, float], count: int) -> list[Key]:
    """The ``count`` keys whose maps agree least (lowest rank correlation; NaN last)."""
    finite = [(rho, k) for k, rho in corr.items() if np.isfinite(rho)]
    return [k for _, k in sorted(finite)[:count]]
