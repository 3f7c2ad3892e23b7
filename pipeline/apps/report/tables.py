"""The report's numbers: per method × model summaries, paired method comparisons, per class.

Every function takes a :class:`~pipeline.apps.report.load.RunData` and returns plain rows
(lists of dicts with flat keys) that the Markdown, CSV and HTML writers share.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline.apps.report.load import Group, RunData, group_rows
from pipeline.apps.report.stats import bootstrap_ci, paired


@dataclass(frozen=True)
class Metric:
    """A per-clip quality column: its name in the table, label, and direction."""

    column: str
    label: str
    higher_is_better: bool

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


METRICS = (
    Metric("deletion_auc", "deletion", False),
    Metric("insertion_auc", "insertion", True),
    Metric("spt_rate", "S-PT", True),
    Metric("tpt_hit", "T-PT", True),
    Metric("t_above_median_share", "T-mass", True),  # above-median mass in the true frames
)


def present_metrics(run: RunData) -> list[Metric]:
    """The metrics with at least one value in the run (S-PT needs boxes, T-PT frame ranges)."""
    return [m for m in METRICS if np.isfinite(run.column(m.column)).any()]


def short(h: str | None, n: int = 6) -> str:
    return (h or "?")[:n]


def group_labels(groups: list[Group]) -> dict[Group, tuple[str, str]]:
    """(model label, method label) per group; hash prefixes only where they disambiguate.

    The model label gets ``w:<weights>`` when a model has several weights in the output, the
    method label ``c:<config>`` when a method of one model and weights has several configs.
    """
    weights: dict[str, set] = {}
    configs: dict[tuple, set] = {}
    for model, w, c, method in groups:
        weights.setdefault(model, set()).add(w)
        configs.setdefault((model, w, method), set()).add(c)
    out = {}
    for g in groups:
        model, w, c, method = g
        ml = model + (f" w:{short(w)}" if len(weights[model]) > 1 else "")
        me = method + (f" c:{short(c)}" if len(configs[(model, w, method)]) > 1 else "")
        out[g] = (ml, me)
    return out


def summarise(run: RunData) -> list[dict]:
    """One row per (model, weights, config, method): clips, mean / median / 95 % bootstrap
    interval of each present metric, pooled S-PT, seconds and passes per map, accuracy."""
    groups = run.groups()
    labels = group_labels(list(groups))
    metrics = present_metrics(run)
    rows = []
    for g, idx in groups.items():
        row = {"model": labels[g][0], "method": labels[g][1], "weights_sha256": g[1],
               "config_hash": g[2], "clips": int(idx.size)}
        for m in metrics:
            v = run.column(m.column, idx)
            mean, lo, hi = bootstrap_ci(v)
            finite = v[np.isfinite(v)]
            row.update({f"{m.column}_n": int(finite.size), f"{m.column}_mean": mean,
                        f"{m.column}_median": float(np.median(finite)) if finite.size
                        else float("nan"), f"{m.column}_lo": lo, f"{m.column}_hi": hi})
        if any(m.column == "spt_rate" for m in metrics):
            frames = np.nansum(run.column("spt_frames", idx))
            row["spt_pooled"] = (float(np.nansum(run.column("spt_hits", idx)) / frames)
                                 if frames else float("nan"))
        correct = run.column("correct", idx)
        row.update({
            "seconds": float(np.nanmean(run.column("seconds", idx))),
            "forward_passes": float(np.nanmean(run.column("forward_passes", idx))),
            "backward_passes": float(np.nanmean(run.column("backward_passes", idx))),
            "accuracy": float(np.nanmean(correct)) if np.isfinite(correct).any()
            else float("nan"),
        })
        rows.append(row)
    return rows


def per_clip(run: RunData, idx: np.ndarray, column: str, text: bool = False) -> dict:
    """{clip_id: value} of some rows (the first row of a clip wins); floats, or strings with
    ``text``."""
    values = run.strings(column, idx) if text else run.column(column, idx)
    out: dict = {}
    for cid, v in zip(run.strings("clip_id", idx), values, strict=True):
        out.setdefault(cid, v)
    return out


def paired_columns(run_a: RunData, idx_a: np.ndarray, run_b: RunData, idx_b: np.ndarray,
                   metrics: list[Metric], win: str) -> dict:
    """Per metric, rows ``idx_a`` of ``run_a`` against rows ``idx_b`` of ``run_b`` matched by
    clip: ``<column>_clips``, ``_diff`` / ``_lo`` / ``_hi`` (a − b, 95 % interval),
    ``_<win>`` (share of clips where a is better) and ``_p`` (Wilcoxon)."""
    out = {}
    for m in metrics:
        va, vb = aligned(per_clip(run_a, idx_a, m.column), per_clip(run_b, idx_b, m.column))
        p = paired(va, vb, m.higher_is_better)
        out.update({f"{m.column}_clips": p.clips, f"{m.column}_diff": p.diff[0],
                    f"{m.column}_lo": p.diff[1], f"{m.column}_hi": p.diff[2],
                    f"{m.column}_{win}": p.win_rate, f"{m.column}_p": p.p_value})
    return out


def aligned(a: dict[str, float], b: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Values of the clips both dicts hold, in one order: ((n,), (n,))."""
    common = sorted(a.keys() & b.keys())
    return (np.array([a[c] for c in common], np.float64),
            np.array([b[c] for c in common], np.float64))


def method_pairs(run: RunData, reference: str | None = "aosa") -> list[dict]:
    """Paired comparisons of methods on the same clips, within each model and weights.

    Each method is compared with ``reference`` (when the model has it; otherwise with its first
    method); ``reference=None`` compares every pair. Per present metric: the mean difference
    (a − b) with its bootstrap interval, a's win rate and the Wilcoxon signed-rank p-value.
    """
    groups = run.groups()
    labels = group_labels(list(groups))
    metrics = present_metrics(run)
    by_model: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_model.setdefault(g[:2], []).append(g)
    rows = []
    for members in by_model.values():
        if reference is None:
            pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1:]]
        else:
            refs = [g for g in members if g[3] == reference] or members[:1]
            pairs = [(a, refs[0]) for a in members if a != refs[0]]
        for a, b in pairs:
            rows.append({"model": labels[a][0], "a": labels[a][1], "b": labels[b][1],
                         **paired_columns(run, groups[a], run, groups[b], metrics, "win")})
    return rows


REFERENCE_METHODS = ("random", "center")
"""References that explain nothing: never recommended, but a tie with one is reported."""


def chooser(run: RunData, alpha: float = 0.05) -> list[dict]:
    """Which method to run, per model × weights and present metric, from this run's clips.

    The best method is the one with the best mean. A method is *tied with the best* when its
    per-clip values, paired with the best's on the same clips, are not shown different (the
    two-sided Wilcoxon signed-rank p ≥ ``alpha``, or no test possible). The choice is the
    cheapest tied method by seconds per map, references (:data:`REFERENCE_METHODS`) excluded:
    the method a dataset-scale job should run if that metric is what it cares about.

    Returns:
        rows with ``model``, ``metric``, ``best`` / ``best_mean`` / ``best_seconds``,
        ``choice`` / ``choice_mean`` / ``choice_seconds`` (None when only references tie),
        ``tied`` (labels joined by ", ", best first), ``reference_tied`` (a reference ties
        with the best: the metric does not separate the methods on this run) and ``clips``
        (the fewest paired clips behind a tie).
    """
    groups = run.groups()
    labels = group_labels(list(groups))
    by_model: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_model.setdefault(g[:2], []).append(g)
    rows, metrics = [], present_metrics(run)
    for members in by_model.values():
        seconds = {g: float(np.nanmean(run.column("seconds", groups[g]))) for g in members}
        for m in metrics:
            values = {g: per_clip(run, groups[g], m.column) for g in members}
            means = {g: float(np.nanmean(list(v.values()))) for g, v in values.items()
                     if np.isfinite(list(v.values())).any()}
            if not means:
                continue
            sign = 1.0 if m.higher_is_better else -1.0
            best = max(means, key=lambda g: (sign * means[g], -seconds[g]))
            tied, clips = [best], []
            for g in sorted(means, key=lambda g: seconds[g]):
                if g == best:
                    continue
                p = paired(*aligned(values[g], values[best]), m.higher_is_better)
                if not p.p_value < alpha:  # NaN (too few pairs) counts as not shown different
                    tied.append(g)
                    clips.append(p.clips)
            usable = [g for g in tied if g[3] not in REFERENCE_METHODS]
            choice = min(usable, key=lambda g: seconds[g]) if usable else None
            rows.append({
                "model": labels[best][0], "metric": m.label, "metric_column": m.column,
                "best": labels[best][1], "best_mean": means[best],
                "best_seconds": seconds[best],
                "choice": labels[choice][1] if choice else None,
                "choice_mean": means[choice] if choice else float("nan"),
                "choice_seconds": seconds[choice] if choice else float("nan"),
                "tied": ", ".join(labels[g][1] for g in tied),
                "reference_tied": any(g[3] in REFERENCE_METHODS for g in tied),
                "clips": min(clips) if clips else len(values[best])})
    return rows


def per_class(run: RunData) -> list[dict]:
    """Per model × method × true class: clips and the mean of each present metric."""
    if not np.isfinite(run.column("label")).any():
        return []
    groups = group_rows(run.scalars, ("model", "weights_sha256", "config_hash", "method",
                                      "label_name"))
    labels = group_labels(list(run.groups()))
    metrics = present_metrics(run)
    rows = []
    for (model, w, c, method, label), idx in groups.items():
        if not label:
            continue
        ml, me = labels[(model, w, c, method)]
        row = {"model": ml, "method": me, "class": label, "clips": int(idx.size)}
        for m in metrics:
            v = run.column(m.column, idx)
            row[f"{m.column}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
        rows.append(row)
    return rows


def accuracy_per_class(run: RunData) -> list[dict]:
    """Per model (and weights) × true class: clips, correct predictions, accuracy and the
    most frequent wrong prediction. A clip counts once, whatever its number of methods."""
    if not np.isfinite(run.column("label")).any():
        return []
    rows = []
    weights = {}
    for model, w in group_rows(run.scalars, ("model", "weights_sha256")):
        weights.setdefault(model, set()).add(w)
    groups = group_rows(run.scalars, ("model", "weights_sha256", "label_name"))
    for (model, w, label), idx in groups.items():
        if not label:
            continue
        seen: dict[str, tuple[float, str]] = {}
        for cid, ok, pred in zip(run.strings("clip_id", idx), run.column("correct", idx),
                                 run.strings("predicted_name", idx), strict=True):
            seen.setdefault(cid, (ok, pred))
        ok = np.array([v[0] for v in seen.values()])
        wrong = [p for o, p in seen.values() if o == 0]
        confused = Counter(wrong).most_common(1)[0][0] if wrong else ""  # ties: first seen
        rows.append({"model": model + (f" w:{short(w)}" if len(weights[model]) > 1 else ""),
                     "class": label, "clips": len(seen), "correct": int(np.nansum(ok)),
                     "accuracy": float(np.nanmean(ok)), "most_confused_with": confused})
    return rows
