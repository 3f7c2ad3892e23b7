"""The report's plots (matplotlib, Agg backend): metric distributions, mean deletion and
insertion curves with bands, time against quality, and a comparison's deltas.

Each function writes one PNG and returns its path. Every plot colours a method with its one
colour (:mod:`~pipeline.apps.report.colours`); several models are told apart by line style or
label. A run without metric values gets no plot at all (the caller says so in one line).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.apps.report.colours import method_colour  # noqa: E402
from pipeline.apps.report.load import RunData  # noqa: E402
from pipeline.apps.report.tables import Metric, group_labels  # noqa: E402


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _label(model: str, method: str, models: int) -> str:
    return method if models == 1 else f"{model}\n{method}"


def distributions(run: RunData, metrics: Sequence[Metric], path: str) -> str:
    """Box plots of each metric's per-clip values, one box per model × method (``metrics``
    not empty)."""
    groups = run.groups()
    labels = group_labels(list(groups))
    models = len({m for m, _ in labels.values()})
    names = [_label(*labels[g], models) for g in groups]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 3.6),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        data = []
        for idx in groups.values():
            v = run.column(m.column, idx)
            data.append(v[np.isfinite(v)])
        boxes = ax.boxplot([d if d.size else [np.nan] for d in data], showmeans=True,
                           patch_artist=True, medianprops={"color": "black"},
                           meanprops={"marker": "^", "markerfacecolor": "white",
                                      "markeredgecolor": "black"})  # no method's colour
        for box, g in zip(boxes["boxes"], groups, strict=True):
            box.set_facecolor(method_colour(g[3]))
        ax.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{m.label} {m.arrow} (per clip)", fontsize=9)
    return _save(fig, path)


def has_curves(run: RunData) -> bool:
    return any(c.result() is not None for curves in run.curves.values()
               for c in curves.values())


def mean_curves(run: RunData, path: str) -> str:
    """Mean deletion and insertion curves per model × method, with the pointwise 95 % interval
    of the mean (normal approximation) as a band; one line style per model."""
    labels = group_labels(list(run.curves))
    models = len({m for m, _ in labels.values()})
    styles = {m: ("-", "--", ":", "-.")[i % 4]
              for i, m in enumerate(sorted({m for m, _ in labels.values()}))}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, name, title in zip(axes, ("deletion_curve", "insertion_curve"),
                               ("deletion ↓ (area lower is better)",
                                "insertion ↑ (area higher is better)"), strict=True):
        for g, curves in run.curves.items():
            res = curves[name].result()
            if res is None:
                continue
            mean, half = res
            x = np.linspace(0, 1, mean.size)
            colour = method_colour(g[3])
            ax.plot(x, mean, color=colour, ls=styles[labels[g][0]],
                    label=_label(*labels[g], models).replace("\n", " "))
            ax.fill_between(x, mean - half, mean + half, color=colour, alpha=0.2)
        ax.set_xlabel("fraction of voxels removed / inserted")
        ax.set_ylabel("target probability")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.02)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def has_quality(summary: Sequence[dict]) -> bool:
    """Whether a summary row has a mean insertion or deletion AUC to plot."""
    return any(np.isfinite(r.get(f"{c}_mean", np.nan)) for r in summary
               for c in ("insertion_auc", "deletion_auc"))


def time_quality(summary: Sequence[dict], path: str) -> str:
    """Seconds per map (log scale) against mean insertion and deletion AUC (95 % intervals)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    models = len({r["model"] for r in summary})
    for ax, col, title in zip(axes, ("insertion_auc", "deletion_auc"),
                              ("insertion AUC ↑", "deletion AUC ↓"), strict=True):
        for r in summary:
            if f"{col}_mean" not in r or not np.isfinite(r[f"{col}_mean"]):
                continue
            x = max(r["seconds"], 1e-4)
            y, lo, hi = r[f"{col}_mean"], r[f"{col}_lo"], r[f"{col}_hi"]
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="o", capsize=3,
                        color=method_colour(r["method"]))
            ax.annotate(_label(r["model"], r["method"], models).replace("\n", " "), (x, y),
                        fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("seconds per map (log)")
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def deltas(rows: Sequence[dict], metrics: Sequence[Metric], path: str) -> str:
    """Per method, candidate − baseline of each metric's mean with its 95 % interval."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 3.2),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        ys = np.arange(len(rows))
        d = np.array([r.get(f"{m.column}_diff", np.nan) for r in rows])
        lo = np.array([r.get(f"{m.column}_lo", np.nan) for r in rows])
        hi = np.array([r.get(f"{m.column}_hi", np.nan) for r in rows])
        for y, r, di, lo_, hi_ in zip(ys, rows, d, lo, hi, strict=True):
            ax.errorbar([di], [y], xerr=[[np.nan_to_num(di - lo_)], [np.nan_to_num(hi_ - di)]],
                        fmt="o", capsize=3, color=method_colour(r["method"]))
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(ys, [r["method"] for r in rows], fontsize=7)
        ax.set_title(f"Δ {m.label} {m.arrow}", fontsize=9)
    return _save(fig, path)
