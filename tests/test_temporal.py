"""Temporal pointing metrics: known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transforms.temporal import (
    above_median_share,
    frame_masses,
    mass_in_range,
    temporal_pointing,
)


def frames_with(values: list[float], h: int = 2, w: int = 3) -> np.ndarray:
    """(T, h, w) map whose frame t is constant ``values[t]``."""
    return np.array(values, dtype=np.float64)[:, None, None] * np.ones((1, h, w))


def test_frame_masses_count_positive_values_only():
    s = frames_with([1.0, -2.0, 0.5])
    s[1, 0, 0] = 3.0
    np.testing.assert_allclose(frame_masses(s), [6.0, 3.0, 3.0])


def test_temporal_pointing():
    s = frames_with([0.1, 0.2, 0.9, 0.3])
    assert temporal_pointing(s, (2, 3)) and temporal_pointing(s, (0, 4))
    assert not temporal_pointing(s, (0, 2)) and not temporal_pointing(s, (3, 4))
    # Mass, not the peak: frame 0 has one large voxel, frame 1 more mass overall.
    s = np.zeros((2, 4, 4))
    s[0, 0, 0] = 5.0
    s[1] = 0.5
    assert temporal_pointing(s, (1, 2)) and not temporal_pointing(s, (0, 1))
    # Negative values never count; ties go to the first frame; no positive value: a miss.
    s = frames_with([-9.0, 1.0, 1.0])
    assert temporal_pointing(s, (1, 2)) and not temporal_pointing(s, (2, 3))
    assert not temporal_pointing(frames_with([-1.0, -2.0]), (0, 2))
    assert not temporal_pointing(np.zeros((3, 2, 2)), (0, 3))


def test_mass_in_range():
    s = frames_with([1.0, 3.0, 0.0, -5.0])
    assert mass_in_range(s, (0, 1)) == pytest.approx(0.25)
    assert mass_in_range(s, (1, 4)) == pytest.approx(0.75)
    assert mass_in_range(s, (0, 4)) == pytest.approx(1.0)
    assert mass_in_range(np.ones((8, 2, 2)), (0, 4)) == pytest.approx(0.5)  # flat in time
    assert math.isnan(mass_in_range(frames_with([-1.0, 0.0]), (0, 1)))


def test_above_median_share():
    # 4 frames of 1 voxel: values 0, 1, 2, 5; median 1.5; excess 0, 0, 0.5, 3.5.
    s = np.array([0.0, 1.0, 2.0, 5.0])[:, None, None]
    assert above_median_share(s, (3, 4)) == pytest.approx(3.5 / 4.0)
    assert above_median_share(s, (0, 2)) == 0.0
    assert above_median_share(s, (2, 4)) == pytest.approx(1.0)
    # Invariant to an offset and to a positive scale (mass_in_range is not to the offset).
    for t in (s + 10.0, 3.0 * s, s - 4.0):
        assert above_median_share(t, (3, 4)) == pytest.approx(3.5 / 4.0)
    assert mass_in_range(s + 10.0, (3, 4)) != pytest.approx(mass_in_range(s, (3, 4)))
    # A map flat in time (any spatial pattern repeated in every frame): the range's share of T.
    rng = np.random.default_rng(0)
    pattern = rng.normal(size=(1, 5, 5))
    assert above_median_share(np.repeat(pattern, 8, 0), (0, 4)) == pytest.approx(0.5)
    assert above_median_share(np.repeat(pattern, 8, 0), (2, 4)) == pytest.approx(0.25)
    # Ties at the median have zero excess; a constant map has none at all.
    assert above_median_share(np.array([1.0, 1.0, 1.0, 3.0])[:, None, None],
                              (3, 4)) == pytest.approx(1.0)
    assert math.isnan(above_median_share(np.full((4, 2, 2), 0.7), (0, 2)))


@pytest.mark.parametrize("rng_", [(0, 0), (-1, 2), (2, 1), (0, 5)])
def test_bad_ranges_are_refused(rng_):
    with pytest.raises(ValueError, match="frame range"):
        mass_in_range(np.ones((4, 2, 2)), rng_)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="T, H, W"):
        temporal_pointing(np.ones((4, 2)), (0, 1))
    bad = np.ones((4, 2, 2))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        above_median_share(bad, (0, 1))


def test_above_median_share_in_a_truth_mask_known_answers() -> None:
    """The spatial form: a hand-summed case, a map inside the truth (1), a peak outside (0),
    a constant map (nan), and a shape mismatch refused."""
    from transforms.temporal import above_median_share_in

    sal = np.zeros((2, 2, 2))
    sal[0, 0, 0], sal[1, 1, 1], sal[0, 1, 0] = 4.0, 2.0, 2.0   # median 0: excess 4, 2, 2
    truth = np.zeros(sal.shape, dtype=bool)
    truth[0] = True                                               # holds 4 + 2 of 8
    assert above_median_share_in(sal, truth) == pytest.approx(0.75)
    box = np.zeros((8, 6, 6), dtype=bool)
    box[:, 1:3, 2:5] = True                    # 6 of 36 pixels: under half
    assert above_median_share_in(box.astype(float), box) == 1.0
    elsewhere = np.zeros(box.shape)
    elsewhere[:, 4:6, 0:2] = 1.0               # a peak outside the box
    assert above_median_share_in(elsewhere, box) == 0.0
    assert np.isnan(above_median_share_in(np.ones(box.shape), box))
    with pytest.raises(ValueError, match="differ in shape"):
        above_median_share_in(np.ones((2, 2, 2)), box)
