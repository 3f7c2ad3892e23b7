"""Statistics over clips: bootstrap intervals, paired comparisons, rank correlation of maps.

scipy does the statistics (``bootstrap``, ``wilcoxon``, ``spearmanr``); the running curve
moments are a short pure update of ours (Chan's pairwise formula): numpy and scipy have no
mergeable moments, and scikit-learn's ``StandardScaler.partial_fit`` keeps them only as a
scaler's by-product. Every function takes per-clip arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

# Resamples are drawn this many elements at a time (bounded memory at any number of clips).
_CHUNK = 2_000_000


def bootstrap_ci(values: np.ndarray, reps: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of the mean (resampling clips), by scipy.

    ``scipy.stats.bootstrap(method="percentile")`` with a fixed seed, so a report is
    reproducible. The percentile interval, not scipy's default BCa, because BCa (a) is
    undefined when every value is equal (it returns NaN: a paired difference that is the same
    on every clip is common, e.g. two settings that agree), (b) needs a jackknife over the
    clips whose cost grows with the square of their number, at dataset scale (tens of
    thousands of clips) for every metric, method and pair of the report, and (c) gains little
    coverage once there are tens of clips (with fewer, on skewed values, both intervals are
    too narrow; ``benchmarks/bootstrap_interval.py`` measures both). It also keeps the
    intervals of earlier reports to rounding: the resamples are the ones this function drew
    before it used scipy (only scipy's quantile interpolation differs, in the last bit).

    Args:
        values: (n,) per-clip values (NaNs dropped).
        reps: Number of resamples.
        seed: Seed of the resampling generator.
        level: Confidence level of the two-sided interval.

    Returns:
        (mean, low, high); NaNs when there are no values, (x, x, x) for a single value x.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    mean = float(v.mean())
    if v.size == 1:  # every resample is the value itself
        return mean, mean, mean
    ci = stats.bootstrap((v,), np.mean, n_resamples=reps, batch=max(1, _CHUNK // v.size),
                         vectorized=True, confidence_level=level, method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    return mean, float(ci.low), float(ci.high)


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
    if np.count_nonzero(d) < 2:
        return float("nan")
    return float(stats.wilcoxon(d, zero_method="wilcox").pvalue)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of the same size (flattened), by scipy.

    Ties get their average rank. NaN when either map is constant (no ranking to correlate,
    as before scipy; without scipy's warning) or holds a NaN.
    """
    a, b = np.ravel(a), np.ravel(b)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations from the mean of vectors, per element.

    Attributes:
        n: number of vectors.
        mean: (k,) their mean.
        m2: (k,) sum over the vectors of (x - mean)².
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        """Moments of (n, k) rows (two passes: exact to rounding whatever their mean)."""
        mean = rows.mean(axis=0)
        return cls(rows.shape[0], mean, ((rows - mean) ** 2).sum(axis=0))

    def merge(self, other: Moments) -> Moments:
        """Moments of both sets of rows together, by the pairwise update of Chan, Golub and
        LeVeque (1983, "Algorithms for computing the sample variance: analysis and
        recommendations", The American Statistician 37(3)); with one row in ``other`` it is
        Welford's update (1962, "Note on a method for calculating corrected sums of squares
        and products", Technometrics 4(3)).

        The sum-and-sum-of-squares formula (mean(x²) − mean²) cancels catastrophically when
        the mean is large against the spread; this one adds deviations only.
        """
        if not self.n or not other.n:
            return other if not self.n else self
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * (other.n / n),
                       self.m2 + other.m2 + delta * delta * (self.n * other.n / n))


class CurveMean:
    """Running mean and pointwise 95 % interval of the mean of curves, one batch at a time.

    Holds one :class:`Moments` whatever the number of curves (bounded memory).
    """

    def __init__(self) -> None:
        self.moments: Moments | None = None

    @property
    def n(self) -> int:
        """Curves added so far."""
        return self.moments.n if self.moments is not None else 0

    def add(self, curves: np.ndarray) -> None:
        """Add (n, steps + 1) curves (rows with NaNs are skipped)."""
        curves = np.asarray(curves, np.float64)
        curves = curves[np.isfinite(curves).all(axis=1)]
        if not curves.size:
            return
        if self.moments is None:
            self.moments = Moments.of(curves)
        elif self.moments.mean.shape[0] == curves.shape[1]:  # another length: keep the first
            self.moments = self.moments.merge(Moments.of(curves))

    def result(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean (steps + 1,), half-width of the normal 95 % interval (steps + 1,)), or None."""
        if self.moments is None:
            return None
        n, mean, m2 = self.moments.n, self.moments.mean, self.moments.m2
        var = m2 / max(n - 1, 1)
        return mean, 1.96 * np.sqrt(var / n)
