"""The report's running curve moments: Chan's pairwise update against the naive formula."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.apps.report.stats import CurveMean, Moments


def _batches(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(rows, np.cumsum(sizes)[:-1])


def test_moments_hold_where_sum_of_squares_cancels():
    """Curves near 1e8 with unit noise: mean(x²) − mean² loses every significant digit of the
    variance (float64 holds ~16 digits, x² ~1e16), the pairwise update keeps it."""
    rng = np.random.default_rng(0)
    rows = 1e8 + rng.normal(0.0, 1.0, size=(3000, 3))
    sizes = [1, 999, 7, 1993]
    truth = rows.var(axis=0, ddof=1)  # two passes over all rows at once
    n = rows.shape[0]
    total = sum(b.sum(axis=0) for b in _batches(rows, sizes))
    squares = sum((b * b).sum(axis=0) for b in _batches(rows, sizes))
    naive = (squares / n - (total / n) ** 2) * n / (n - 1)
    assert np.abs(naive / truth - 1).max() > 0.1  # the formula replaced: wrong by > 10 %
    curves = CurveMean()
    for b in _batches(rows, sizes):
        curves.add(b)
    mean, half = curves.result()
    np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=1e-13)  # 1e-5 of the noise
    # the data hold 1e8 to ~1e-8: the variance is known to ~1e-8 relative, whichever formula
    np.testing.assert_allclose(half, 1.96 * np.sqrt(truth / n), rtol=1e-6)


def test_merge_is_the_moments_of_the_union_in_any_order():
    rng = np.random.default_rng(1)
    rows = rng.exponential(size=(40, 5))
    parts = [Moments.of(b) for b in _batches(rows, [3, 1, 20, 16])]
    whole = Moments.of(rows)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        acc = Moments(0, np.zeros(5), np.zeros(5))
        for i in order:
            acc = acc.merge(parts[i])
        assert acc.n == 40
        np.testing.assert_allclose(acc.mean, whole.mean, rtol=1e-13)
        np.testing.assert_allclose(acc.m2, whole.m2, rtol=1e-12)
    # ((a, b), (c, d)) pairwise equals the sequential sum
    tree = parts[0].merge(parts[1]).merge(parts[2].merge(parts[3]))
    np.testing.assert_allclose(tree.m2, whole.m2, rtol=1e-12)


def test_curve_mean_skips_nan_rows_and_other_lengths():
    curves = CurveMean()
    assert curves.result() is None
    curves.add(np.array([[0.0, 1.0], [np.nan, 5.0]]))
    curves.add(np.array([[2.0, 3.0, 4.0]]))  # another length: ignored
    curves.add(np.array([[2.0, 3.0]]))
    mean, half = curves.result()
    assert curves.n == 2
    assert mean.tolist() == [1.0, 2.0]
    # two curves: variance 2 per step, half-width 1.96 * sqrt(2 / 2)
    assert half == pytest.approx([1.96, 1.96])
    single = CurveMean()
    single.add(np.array([[0.5, 0.25]]))
    assert single.result()[1].tolist() == [0.0, 0.0]  # one curve: no spread to report
