"""AOSA-T: windows, exactness against AOSA, a dense reference, a time-and-region-only network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import transforms.methods.aosa  # noqa: F401  (registers aosa, aosa_sgl)
import transforms.methods.aosa_t  # noqa: F401  (registers aosa_t, aosa_t_sgl)
from models.registry import get_spec
from tests.test_tubes import constant_flow
from transforms.methods.aosa_t import (
    temporal_windows,
    window_partners,
    windowed_masks,
)
from transforms.methods.base import METHODS, MethodOptions
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer
from transforms.temporal import above_median_share, mass_in_range, temporal_pointing
from transforms.tubes import Tubes, build_tubes

T, H, W = 8, 32, 32
REGION = (slice(8, 20), slice(4, 16))


class TimeRegionModel(nn.Module):
    """Two classes; class 0's logit is 4 × the mean of channel 0 in ``region`` × ``frames``."""

    def __init__(self, frames: slice, region: tuple[slice, slice] = REGION):
        super().__init__()
        self.frames, self.region = frames, region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys, xs = self.region
        v = x[:, 0, self.frames, ys, xs].mean(dim=(1, 2, 3)) * 4.0
        return torch.stack([v, torch.zeros_like(v)], dim=1)


def scorer_of(model: nn.Module) -> Scorer:
    return Scorer(model, get_spec("tiny"), torch.device("cpu"))


def run(method: str, model: nn.Module, x: torch.Tensor, tubes: Tubes, batch_size: int = 8,
        target: int = 0, **options) -> tuple[np.ndarray, PerturbationEngine]:
    engine = PerturbationEngine(scorer_of(model), x, target, batch_size=batch_size)
    sal = METHODS[method](MethodOptions(**options)).explain(engine, tubes)
    return sal.saliency.numpy(), engine


@pytest.fixture(scope="module")
def moving_tubes() -> Tubes:
    return build_tubes(constant_flow(T, H, W, 1.0, 0.5), stride=8, box_hw=(8, 8), topk=2)


@pytest.fixture(scope="module")
def static_tubes() -> Tubes:
    return build_tubes(constant_flow(T, H, W, 0.0, 0.0), stride=4, box_hw=(8, 8), topk=2)


def clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, T, H, W, generator=torch.Generator().manual_seed(seed)) + 1.0


# --- windows ---------------------------------------------------------------------------------


def test_default_windows_are_two_halves():
    assert temporal_windows(16) == [(0, 8), (8, 16)]
    assert temporal_windows(15) == [(0, 8), (7, 15)]
    assert temporal_windows(8) == [(0, 4), (4, 8)]
    assert temporal_windows(1) == [(0, 1)]


def test_windows_with_options():
    assert temporal_windows(16, 8, 4) == [(0, 8), (4, 8 + 4), (8, 16)]
    assert temporal_windows(16, 4) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert temporal_windows(16, 6, 6) == [(0, 6), (6, 12), (10, 16)]  # last one fits the end
    assert temporal_windows(16, 16) == [(0, 16)] == temporal_windows(16, 40, 3)
    for bad in [dict(window=0), dict(hop=0), dict(window=4, hop=5)]:
        with pytest.raises(ValueError):
            temporal_windows(16, **bad)


def test_whole_clip_window_partners_match_the_tubes(moving_tubes):
    got = window_partners(moving_tubes.tracks, moving_tubes.valid, 0, T, 2)
    np.testing.assert_array_equal(got, moving_tubes.partners)


def test_window_masks_are_subtubes_with_window_partners(moving_tubes):
    n = moving_tubes.num_masks
    boxes, partners = windowed_masks(moving_tubes, [(0, 4), (4, 8)])
    assert boxes.shape == (2 * n, T, 4) and partners.shape == (2 * n, 2)
    np.testing.assert_array_equal(boxes[:n, :4], moving_tubes.boxes[:, :4])
    assert not boxes[:n, 4:].any() and not boxes[n:, :4].any()
    np.testing.assert_array_equal(boxes[n:, 4:], moving_tubes.boxes[:, 4:])
    assert partners[:n].max() < n <= partners[n:].min()  # partners from the same window
    single = windowed_masks(moving_tubes, [(0, 4), (4, 8)], integrate=False)[1]
    assert single.shape == (2 * n, 0)


def test_tubes_gone_before_the_window_are_partners_of_last_resort():
    """Anchors 0 and 1 leave the frame at step 1; in window [4, 8) nobody picks them."""
    n = 6
    tracks = np.zeros((n, T, 2), dtype=np.float32)
    valid = np.ones((n, T), dtype=bool)
    tracks[:, :, 0] = np.arange(n)[:, None] * 5.0 + 2.0
    tracks[:, :, 1] = 10.0
    tracks[:2, 1:] = -20.0
    valid[:2, 1:] = False
    part = window_partners(tracks, valid, 4, 8, 3)
    assert not np.isin(part[2:], [0, 1]).any()
    part = window_partners(tracks, valid, 4, 8, 5)  # every other tube is needed now
    assert set(part[3].tolist()) == {0, 1, 2, 4, 5}


# --- exactness -------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["mean", "paper", "reference"])
@pytest.mark.parametrize("pair", [("aosa_t", "aosa"), ("aosa_t_sgl", "aosa_sgl")])
@pytest.mark.parametrize("window", [T, 100])
def test_whole_clip_window_is_aosa_bit_for_bit(moving_tubes, pair, aggregation, window):
    model = TimeRegionModel(slice(0, T))
    got, e1 = run(pair[0], model, clip(), moving_tubes, 5, aggregation=aggregation,
                  t_window=window)
    want, e2 = run(pair[1], model, clip(), moving_tubes, 5, aggregation=aggregation)
    assert np.array_equal(got, want)
    assert e1.passes.forward == e2.passes.forward == moving_tubes.num_masks + 1


def dense_reference(x: np.ndarray, tubes: Tubes, windows, score, integrate: bool) -> np.ndarray:
    """``mean`` aggregation with dense numpy masks, windows and partners computed here."""
    n = tubes.num_masks
    k = tubes.partners.shape[1] if integrate else 0
    occ, drops = [], []
    for a, b in windows:
        part = window_partners(tubes.tracks, tubes.valid, a, b, k)
        for i in range(n):
            m = np.zeros((T, H, W))
            for j in [i, *part[i]]:
                for f in range(a, b):
                    x0, y0, x1, y1 = tubes.boxes[j, f]
                    m[f, y0:y1, x0:x1] = 1.0
            occ.append(m)
            drops.append(score(x) - score(x * (1 - m)[None]))
    occ_a, drops_a = np.array(occ), np.array(drops)
    cover = occ_a.sum(0)
    num = (drops_a[:, None, None, None] * occ_a).sum(0)
    return np.where(cover > 0, num / np.maximum(cover, 1), 0.0)


@pytest.mark.parametrize("method", ["aosa_t", "aosa_t_sgl"])
@pytest.mark.parametrize("window,hop", [(None, None), (4, 2)])
def test_matches_a_dense_reference_and_counts_passes(moving_tubes, method, window, hop):
    model = TimeRegionModel(slice(2, 6))
    x = clip(3)

    def score(v: np.ndarray) -> float:
        return torch.softmax(model(torch.from_numpy(v).float()[None]), 1)[0, 0].item()

    got, engine = run(method, model, x, moving_tubes, 7, t_window=window, t_hop=hop)
    windows = temporal_windows(T, window, hop)
    want = dense_reference(x.numpy(), moving_tubes, windows, score, method == "aosa_t")
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert engine.passes.forward == moving_tubes.num_masks * len(windows) + 1


@pytest.mark.parametrize("batch_size", [1, 3, 16, 64])
def test_batch_size_does_not_change_the_map(moving_tubes, batch_size):
    from models.tiny import TinyVideoNet

    torch.manual_seed(0)
    net = TinyVideoNet(4)
    x = torch.randn(3, T, H, W, generator=torch.Generator().manual_seed(1))
    ref, _ = run("aosa_t", net, x, moving_tubes, 8, target=2, t_window=4, t_hop=2)
    got, _ = run("aosa_t", net, x, moving_tubes, batch_size, target=2, t_window=4, t_hop=2)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_needs_tubes_and_matching_frames(moving_tubes):
    engine = PerturbationEngine(scorer_of(TimeRegionModel(slice(0, 4))), clip(), 0)
    with pytest.raises(ValueError, match="needs tube"):
        METHODS["aosa_t"](MethodOptions()).explain(engine, None)
    short = build_tubes(constant_flow(4, H, W, 0.0, 0.0), 8, (8, 8), 2)
    with pytest.raises(ValueError, match="frames"):
        METHODS["aosa_t"](MethodOptions()).explain(engine, short)


# --- the known answer: evidence in one region during the first half ---------------------------


@pytest.mark.parametrize("tubes_name", ["static_tubes", "moving_tubes"])
@pytest.mark.parametrize("method", ["aosa_t", "aosa_t_sgl"])
def test_time_limited_evidence_is_localised_in_time(request, tubes_name, method):
    tubes = request.getfixturevalue(tubes_name)
    model = TimeRegionModel(slice(0, T // 2))
    x = torch.ones(3, T, H, W)
    truth = (0, T // 2)
    windowed, e = run(method, model, x, tubes)
    flat, _ = run(method.replace("_t", ""), model, x, tubes)
    assert e.passes.forward == 2 * tubes.num_masks + 1  # default: two windows, ≤ 2× AOSA
    assert above_median_share(windowed, truth) >= 0.8
    assert mass_in_range(windowed, truth) >= 0.8 and temporal_pointing(windowed, truth)
    assert above_median_share(flat, truth) == pytest.approx(0.5, abs=0.05)
    assert mass_in_range(flat, truth) == pytest.approx(0.5, abs=0.05)
    # Where: within the evidence frames the maximum is in (or next to) the region.
    for f in range(T // 2):
        r, c = np.unravel_index(np.argmax(windowed[f]), windowed[f].shape)
        assert 8 - 4 <= r < 20 + 4 and 4 - 4 <= c < 16 + 4


def test_second_half_evidence_points_at_the_second_half(static_tubes):
    model = TimeRegionModel(slice(T // 2, T))
    sal, _ = run("aosa_t", model, torch.ones(3, T, H, W), static_tubes)
    assert above_median_share(sal, (T // 2, T)) >= 0.8
    assert temporal_pointing(sal, (T // 2, T)) and not temporal_pointing(sal, (0, T // 2))
