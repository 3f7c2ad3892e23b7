"""Tests of transforms.metrics against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transforms.metrics import (
    PointingResult,
    auc,
    blurred_baseline,
    box_oracle_map,
    center_bias_map,
    deletion_insertion,
    perturbation_curve,
    pointing_game,
    pointing_radius,
    random_map,
)

# --- auc ----------------------------------------------------------------------------------------


def test_auc_constant_and_line():
    assert auc(np.full(29, 0.3)) == pytest.approx(0.3)
    assert auc(np.linspace(0.0, 1.0, 29)) == pytest.approx(0.5)
    assert auc(np.array([0.0, 1.0])) == pytest.approx(0.5)


def test_auc_piecewise_linear_matches_closed_form():
    # y = 1 on [0, 1/4], falls linearly to 0 at 1/2, then 0: area 1/4 + 1/8.
    assert auc(np.array([1.0, 1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.375)
    # Triangle of height 1 on [0, 1]: area 1/2; step 0.1 high on the first half: 0.05.
    assert auc(np.array([0.0, 1.0, 0.0])) == pytest.approx(0.5)
    assert auc(np.array([0.1, 0.1, 0.0])) == pytest.approx(0.075)


@pytest.mark.parametrize("bad", [np.array([1.0]), np.zeros((2, 2))])
def test_auc_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        auc(bad)


# --- deletion / insertion -----------------------------------------------------------------------

T, H, W = 2, 4, 4  # 32 voxels; 8 steps of 4 voxels
STEPS = 8


def region() -> torch.Tensor:
    """R: 8 voxels, scattered so that the flat order of R is not the first 8 indices."""
    r = torch.zeros(T, H, W, dtype=torch.bool)
    r[0, 1, 1:3] = True
    r[0, 3, 0] = True
    r[1, 0, 3] = True
    r[1, 2, 0:4] = True
    assert int(r.sum()) == 8
    return r


def mean_over_region(r: torch.Tensor):
    """Linear model: score = mean of the input over all channels and the voxels of ``r``."""

    def score_fn(batch: torch.Tensor) -> torch.Tensor:
        assert batch.ndim == 5 and batch.shape[1:] == (3, T, H, W)
        return batch[:, :, r].mean(dim=(1, 2))

    return score_fn


def test_deletion_oracle_curve_by_hand():
    r = region()
    x = torch.ones(3, T, H, W)
    curve = perturbation_curve(x, r.float(), mean_over_region(r), "deletion", steps=STEPS)
    # Step k removes 4k voxels, all of them in R until R (8 voxels) is gone.
    np.testing.assert_allclose(curve, [1, 0.5, 0, 0, 0, 0, 0, 0, 0])
    assert auc(curve) == pytest.approx(0.125)


def test_insertion_oracle_and_inverted_curves_by_hand():
    r = region()
    x = torch.ones(3, T, H, W)
    fn = mean_over_region(r)
    ins = perturbation_curve(x, r.float(), fn, "insertion", steps=STEPS)
    np.testing.assert_allclose(ins, [0, 0.5, 1, 1, 1, 1, 1, 1, 1])
    # Inverted: the 24 voxels outside R go first (6 steps), then R in two steps.
    ins_inv = perturbation_curve(x, 1.0 - r.float(), fn, "insertion", steps=STEPS)
    np.testing.assert_allclose(ins_inv, [0, 0, 0, 0, 0, 0, 0, 0.5, 1])
    del_inv = perturbation_curve(x, 1.0 - r.float(), fn, "deletion", steps=STEPS)
    np.testing.assert_allclose(del_inv, [1, 1, 1, 1, 1, 1, 1, 0.5, 0])
    assert auc(del_inv) == pytest.approx(0.875)


def test_oracle_beats_random_beats_inverted():
    r = region()
    x = torch.ones(3, T, H, W)
    fn = mean_over_region(r)
    maps = {
        "oracle": r.float(),
        "random": torch.from_numpy(random_map((T, H, W), seed=0)),
        "inverted": 1.0 - r.float(),
    }
    res = {k: deletion_insertion(x, m, fn, steps=STEPS) for k, m in maps.items()}
    d = {k: v["deletion_auc"] for k, v in res.items()}
    i = {k: v["insertion_auc"] for k, v in res.items()}
    assert d["oracle"] < d["random"] < d["inverted"]
    assert i["oracle"] > i["random"] > i["inverted"]
    assert d["oracle"] == pytest.approx(0.125) and i["oracle"] == pytest.approx(0.875)


def test_ties_break_by_flat_index():
    # Constant saliency: voxels go in flat order, so a region of the first 8 flat voxels
    # behaves like an oracle, and the last 8 like an inverted map.
    first = torch.zeros(T * H * W, dtype=torch.bool)
    first[:8] = True
    first = first.view(T, H, W)
    x = torch.ones(3, T, H, W)
    flat_map = torch.full((T, H, W), 0.7)
    curve = perturbation_curve(x, flat_map, mean_over_region(first), "deletion", steps=STEPS)
    np.testing.assert_allclose(curve, [1, 0.5, 0, 0, 0, 0, 0, 0, 0])
    last = first.flatten().flip(0).view(T, H, W)
    curve = perturbation_curve(x, flat_map, mean_over_region(last), "deletion", steps=STEPS)
    np.testing.assert_allclose(curve, [1, 1, 1, 1, 1, 1, 1, 0.5, 0])


def sigmoid_model(seed: int = 0, shape=(2, 6, 7)):
    """Score = sigmoid(<w, input>) with fixed random weights (a tiny linear 'network')."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, *shape, generator=gen, dtype=torch.float64) * 0.1

    def score_fn(batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((batch.double() * weight).sum(dim=(1, 2, 3, 4)))

    return score_fn


def test_28_steps_endpoints_and_batch_invariance():
    shape = (2, 6, 7)  # 84 voxels: step k perturbs 3k voxels
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, *shape, generator=gen)
    sal = torch.rand(*shape, generator=gen)
    base = torch.randn(3, *shape, generator=gen)
    fn = sigmoid_model(shape=shape)
    curves = {}
    for bs in (1, 3, 29):
        calls: list[int] = []

        def counting(batch, calls=calls):
            calls.append(batch.shape[0])
            return fn(batch)

        with torch.no_grad():
            curves[bs] = perturbation_curve(x, sal, counting, "deletion", 28, base, bs)
        assert max(calls) <= bs and sum(calls) == 29 and len(calls) == math.ceil(29 / bs)
    assert curves[1].shape == (29,)
    np.testing.assert_array_equal(curves[1], curves[3])
    np.testing.assert_array_equal(curves[1], curves[29])
    assert curves[1][0] == pytest.approx(float(fn(x[None])[0]))
    assert curves[1][-1] == pytest.approx(float(fn(base[None])[0]))
    ins = perturbation_curve(x, sal, fn, "insertion", 28, base, 8)
    assert ins[0] == pytest.approx(float(fn(base[None])[0]))
    assert ins[-1] == pytest.approx(float(fn(x[None])[0]))


def test_step_inputs_are_exactly_top_k_replaced():
    shape = (1, 3, 5)  # 15 voxels, 4 steps: round(15k/4) = 0, 4, 8 (7.5 up), 11, 15
    x = torch.arange(45, dtype=torch.float32).view(3, *shape) + 1.0
    sal = torch.tensor([5, 1, 9, 3, 3, 0, 7, 2, 8, 6, 4, 3, 1, 0, 2], dtype=torch.float32)
    order = [2, 8, 6, 9, 0, 10, 3, 4, 11, 7, 14, 1, 12, 5, 13]  # by value, ties by index
    seen: list[torch.Tensor] = []

    def record(batch):
        seen.extend(batch.clone())
        return batch.new_zeros(batch.shape[0])

    perturbation_curve(x, sal.view(shape), record, "deletion", steps=4, batch_size=2)
    assert len(seen) == 5
    for inp, n in zip(seen, [0, 4, 8, 11, 15], strict=True):
        expected = x.clone().view(3, -1)
        expected[:, order[:n]] = 0.0
        torch.testing.assert_close(inp, expected.view(3, *shape), rtol=0, atol=0)


def test_deletion_insertion_dict():
    r = region()
    x = torch.ones(3, T, H, W)
    res = deletion_insertion(x, r.float(), mean_over_region(r), steps=STEPS, batch_size=4)
    assert set(res) == {
        "deletion_auc",
        "insertion_auc",
        "deletion_curve",
        "insertion_curve",
        "forward_passes",
    }
    assert res["forward_passes"] == 2 * (STEPS + 1)
    assert res["deletion_auc"] == pytest.approx(auc(res["deletion_curve"]))
    # Insertion from a baseline of 0.5 everywhere: starts at 0.5 instead of 0.
    half = torch.full_like(x, 0.5)
    res = deletion_insertion(x, r.float(), mean_over_region(r), STEPS, 8, half)
    np.testing.assert_allclose(res["insertion_curve"], [0.5, 0.75] + [1.0] * 7)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "both"},
        {"steps": 0},
        {"batch_size": 0},
        {"saliency": torch.zeros(T, H, W + 1)},
        {"saliency": torch.full((T, H, W), float("nan"))},
    ],
)
def test_perturbation_curve_rejects_bad_arguments(kwargs):
    args = {
        "x": torch.ones(3, T, H, W),
        "saliency": torch.zeros(T, H, W),
        "score_fn": mean_over_region(region()),
        "mode": "deletion",
    } | kwargs
    with pytest.raises(ValueError):
        perturbation_curve(**args)


def test_blurred_baseline_is_spatial_only_and_normalised():
    x = torch.zeros(3, 2, 21, 21)
    x[1, 0, 10, 10] = 1.0
    out = blurred_baseline(x, sigma=2.0)
    assert out.shape == x.shape
    assert float(out[1, 0].sum()) == pytest.approx(1.0, abs=1e-5)  # mass kept away from borders
    assert float(out[1, 1].abs().sum()) == 0.0 and float(out[0].abs().sum()) == 0.0
    # Separable Gaussian: centre / one-pixel-right ratio is exp(1 / (2 sigma^2)).
    ratio = float(out[1, 0, 10, 10] / out[1, 0, 10, 11])
    assert ratio == pytest.approx(math.exp(1 / 8), rel=1e-5)
    const = torch.full((3, 1, 5, 6), 0.25)
    torch.testing.assert_close(blurred_baseline(const, 3.0), const)
    torch.testing.assert_close(blurred_baseline(x, 0.0), x)


# --- pointing game ------------------------------------------------------------------------------


def peak_map(shape, points) -> np.ndarray:
    """Zero map with value 1 at (row, col) of each frame (None: frame left all zero)."""
    sal = np.zeros(shape, dtype=np.float32)
    for t, p in enumerate(points):
        if p is not None:
            sal[t, p[0], p[1]] = 1.0
    return sal


def test_oracle_box_map_scores_one():
    boxes = [[3, 4, 10, 9], [0, 0, 32, 32], [20, 2, 30, 6], [31, 30, 32, 32]]
    sal = box_oracle_map((4, 32, 32), boxes)
    res = pointing_game(sal, boxes, radius=0.0)
    assert res == PointingResult(hits=4, frames=4, rate=1.0, per_frame=[True] * 4)


def test_distance_to_box_edge_against_radius():
    box = [10, 10, 15, 15]  # columns / rows 10..14
    sal = peak_map((1, 32, 32), [(12, 5)])  # 5 px left of the box
    assert pointing_game(sal, [box], radius=7.0).hits == 1
    assert pointing_game(sal, [box], radius=5.0).hits == 1  # closed disk
    assert pointing_game(sal, [box], radius=3.0).hits == 0
    # Diagonal from the corner (14, 14): point (17, 18) is at distance 5.
    sal = peak_map((1, 32, 32), [(17, 18)])
    assert pointing_game(sal, [box], radius=5.0).hits == 1
    assert pointing_game(sal, [box], radius=4.99).hits == 0


def test_x1_y1_are_exclusive():
    box = [10, 10, 15, 15]
    assert pointing_game(peak_map((1, 32, 32), [(14, 14)]), [box], 0.0).hits == 1
    assert pointing_game(peak_map((1, 32, 32), [(12, 15)]), [box], 0.0).hits == 0
    assert pointing_game(peak_map((1, 32, 32), [(15, 12)]), [box], 0.0).hits == 0
    assert pointing_game(peak_map((1, 32, 32), [(12, 15)]), [box], 1.0).hits == 1


def test_x_is_column_and_y_is_row():
    box = [20, 2, 30, 6]  # wide box at the top right: columns 20..29, rows 2..5
    hit = pointing_game(peak_map((1, 32, 32), [(3, 25)]), [box], radius=1.0)
    transposed = pointing_game(peak_map((1, 32, 32), [(25, 3)]), [box], radius=1.0)
    assert hit.per_frame == [True] and transposed.per_frame == [False]


def test_argmax_ties_go_to_first_pixel_in_row_major_order():
    sal = peak_map((1, 32, 32), [(0, 31)])
    sal[0, 31, 0] = 1.0  # an equal maximum later in row-major order
    assert pointing_game(sal, [[0, 28, 4, 32]], radius=0.0).hits == 0  # box at (31, 0)
    assert pointing_game(sal, [[28, 0, 32, 4]], radius=0.0).hits == 1  # box at (0, 31)


def test_frames_without_box_are_skipped():
    box = [10, 10, 15, 15]
    sal = peak_map((3, 32, 32), [(12, 12), (12, 12), (0, 0)])
    res = pointing_game(sal, [box, None, box], radius=7.0)
    assert (res.hits, res.frames, res.rate) == (1, 2, 0.5)
    assert res.per_frame == [True, None, False]
    none = pointing_game(sal, [None, None, None], radius=7.0)
    assert (none.hits, none.frames, none.per_frame) == (0, 0, [None] * 3)
    assert math.isnan(none.rate)


def test_boxes_partly_outside_are_clipped():
    sal = peak_map((2, 32, 32), [(0, 0), (31, 29)])
    res = pointing_game(sal, [[-5, -5, 3, 3], [30, 30, 40, 40]], radius=0.0)
    assert res.per_frame == [True, False]  # clipped box 2 covers columns 30..31 only
    res = pointing_game(sal, [[-5, -5, 3, 3], [30, 30, 40, 40]], radius=1.0)
    assert res.per_frame == [True, True]


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([[0, 0, 5, 5]], "has 1 boxes for 2 frames"),
        ([[0, 0, 5, 5]] * 3, "has 3 boxes for 2 frames"),
        ([[5, 0, 5, 5], None], "degenerate"),
        ([None, [0, 6, 5, 2]], "degenerate"),
        ([[40, 0, 50, 5], None], "outside"),
        ([[-10, 0, 0, 5], None], "outside"),
        ([None, [0, 32, 5, 40]], "outside"),
        ([[0, 0, 5], None], "x0, y0, x1, y1"),
    ],
)
def test_bad_boxes_raise(boxes, message):
    with pytest.raises(ValueError, match=message):
        pointing_game(np.zeros((2, 32, 32)), boxes, radius=7.0)


def test_pointing_radius():
    assert pointing_radius(224) == 14.0
    assert pointing_radius(112) == 7.0
    with pytest.raises(ValueError):
        pointing_radius(0)


# --- reference maps -----------------------------------------------------------------------------


def test_reference_maps():
    a, b = random_map((2, 5, 6), seed=3), random_map((2, 5, 6), seed=3)
    assert a.shape == (2, 5, 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_map((2, 5, 6), seed=4))

    c = center_bias_map((2, 9, 13))  # centre (4, 6), sigma 9 / 4
    assert c.shape == (2, 9, 13) and c[0, 4, 6] == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(c[1]), (9, 13)) == (4, 6)
    assert c[0, 4, 6 + 2] == pytest.approx(math.exp(-0.5 * (2 / 2.25) ** 2), rel=1e-6)
    np.testing.assert_array_equal(c[0], c[1])

    o = box_oracle_map((3, 8, 10), [[2, 1, 5, 3], None, [8, 6, 12, 9]])
    assert o[0].sum() == 6 and o[0, 1:3, 2:5].all()
    assert o[1].sum() == 0
    assert o[2].sum() == 4 and o[2, 6:8, 8:10].all()  # clipped to the frame
