"""Statistics over clips: bootstrap intervals, paired comparisons, rank correlation of maps.

Pure numpy (and scipy's Wilcoxon signed-rank test); every function takes per-clip arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Resampled index matrices are built this many elements at a time (bounded memory at any n).
_CHUNK = 2_000_000


def bootstrap_ci(values: np.ndarray, reps: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of the mean (resampling clips).

    Args:
        values: (n,) per-clip values (NaNs dropped).

    Returns:
        (mean, low, high); NaNs when there are no values.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    per = max(1, _CHUNK // v.size)
    means = np.concatenate([v[rng.integers(0, v.size, size=(min(per, reps - i), v.size))]
                            .mean(axis=1) for i in range(0, reps, per)])
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two methods (or runs) on the same clips.

    Attributes:
        clips: clips where both values exist.
        diff: mean of (a − b) with its 95 % bootstrap interval.
        win_rate: share of clips where a is better (ties count half).
        p_value: two-sided Wilcoxon signed-rank test of a − b (NaN below 2 non-zero pairs).
    """

    clips: int
    diff: tuple[float, float, float]
    win_rate: float
    p_value: float


def paired(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True) -> Paired:
    """Compare per-clip values ``a`` and ``b`` (n,) aligned on the same clips (NaNs dropped)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if d.size == 0:
        return Paired(0, (float("nan"),) * 3, float("nan"), float("nan"))
    better = d > 0 if higher_is_better else d < 0
    win = float((better.sum() + 0.5 * (d == 0).sum()) / d.size)
    return Paired(int(d.size), bootstrap_ci(d), win, wilcoxon_p(d))


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided p-value of scipy's Wilcoxon signed-rank test on differences ``d`` (n,)."""
    from scipy.stats import wilcoxon

    if np.count_nonzero(d) < 2:
        return float("nan")
    return float(wilcoxon(d, zero_method="wilcox").pvalue)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, ties given the mean of their positions."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0)[np.cumsum(new) - 1]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (flattened); NaN when either is constant."""
    ra, rb = average_ranks(a.ravel()), average_ranks(b.ravel())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


class CurveMean:
    """Running mean and pointwise 95 % interval of the mean of curves, one batch at a time.

    Holds three vectors whatever the number of curves (bounded memory).
    """

    def __init__(self) -> None:
        self.n = 0
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None

    def add(self, curves: np.ndarray) -> None:
        """Add (n, steps + 1) curves (rows with NaNs are skipped)."""
        curves = np.asarray(curves, np.float64)
        curves = curves[np.isfinite(curves).all(axis=1)]
        if not curves.size:
            return
        if self.total is None or self.total.shape[0] != curves.shape[1]:
            if self.total is not None:  # curves of another length: keep the first kind
                return
            self.total = np.zeros(curves.shape[1])
            self.squares = np.zeros(curves.shape[1])
        self.n += curves.shape[0]
        self.total += curves.sum(axis=0)
        self.squares += (curves * curves).sum(axis=0)

    def result(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean (steps + 1,), half-width of the normal 95 % interval (steps + 1,)), or None."""
        if not self.n:
            return None
        mean = self.total / self.n
        var = np.maximum(self.squares / self.n - mean * mean, 0.0) * self.n / max(self.n - 1, 1)
        return mean, 1.96 * np.sqrt(var / self.n)
