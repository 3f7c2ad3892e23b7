"""OSA: geometry, captum's Occlusion as an independent implementation, batching, pass counts."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import Occlusion
from torch import nn

import transforms.methods.osa  # noqa: F401  (registers "osa")
from models.registry import get_spec
from transforms.methods import get_method
from transforms.methods.base import MethodOptions
from transforms.methods.osa import (
    OSA,
    osa_geometry,
    osa_saliency,
    window_boxes,
    window_mask_batches,
    window_starts,
)
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer


def conv_net(seed: int = 0) -> nn.Module:
    """A small random 3D CNN whose output depends on where things are (no global pooling)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool3d((2, 4, 4)), nn.Flatten(), nn.Linear(128, 3))
    with torch.no_grad():
        net[-1].weight.mul_(5.0)  # make probabilities move visibly under occlusion
    return net


class RegionModel(nn.Module):
    """Two classes; class 0's logit is 4 × the mean of channel 0 inside ``region`` (t, y, x)."""

    def __init__(self, region: tuple[slice, slice, slice]):
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ts, ys, xs = self.region
        v = x[:, 0, ts, ys, xs].mean(dim=(1, 2, 3)) * 4.0
        return torch.stack([v, torch.zeros_like(v)], dim=1)


class SumModel(nn.Module):
    """Two classes; class 0's logit is ``scale`` × the sum of the input."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.sum(dim=(1, 2, 3, 4)) * self.scale
        return torch.stack([v, torch.zeros_like(v)], dim=1)


def make_scorer(model: nn.Module) -> Scorer:
    return Scorer(model, get_spec("tiny"), torch.device("cpu"))


def clip(shape: tuple[int, int, int], seed: int = 0, offset: float = 0.0) -> torch.Tensor:
    return torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed)) + offset


def n_windows(shape, window, strides) -> int:
    """captum's count: ceil((size - window) / stride) + 1 positions per axis."""
    return math.prod(math.ceil((s - w) / st) + 1
                     for s, w, st in zip(shape, window, strides, strict=True))


def captum_map(scorer: Scorer, x: torch.Tensor, target: int, window, strides) -> torch.Tensor:
    """captum's Occlusion of the softmax probability vector: (3, T, H, W) attribution."""
    occ = Occlusion(lambda inp: torch.softmax(scorer.logits(inp), dim=1))
    with torch.no_grad():
        attr = occ.attribute(x[None], sliding_window_shapes=(3, *window),
                             strides=(3, *strides), baselines=0, target=target,
                             perturbations_per_eval=16)
    return attr[0]


# --- Geometry -------------------------------------------------------------------------------


def test_osa_geometry_known_answers():
    assert osa_geometry((16, 112, 112)) == ((8, 16, 16), (2, 8, 8))
    assert osa_geometry((16, 224, 224)) == ((8, 32, 32), (2, 16, 16))
    assert osa_geometry((8, 24, 24)) == ((8, 3, 3), (2, 2, 2))  # 3.43 -> 3, 1.71 -> 2
    assert osa_geometry((4, 16, 8)) == ((4, 2, 1), (2, 1, 1))  # clamped to >= 1 px
    assert osa_geometry((16, 112, 112), window=(4, 8, 8), strides=(1, 4, 4)) == \
        ((4, 8, 8), (1, 4, 4))
    assert n_windows((16, 112, 112), *osa_geometry((16, 112, 112))) == 5 * 13 * 13


@pytest.mark.parametrize("window, strides", [
    ((17, 16, 16), (2, 8, 8)),  # larger than the clip
    ((8, 16, 16), (2, 0, 8)),  # zero stride
    ((8, 4, 16), (2, 8, 8)),  # stride > window on an axis the window does not span: gaps
])
def test_osa_geometry_rejects_bad_overrides(window, strides):
    with pytest.raises(ValueError):
        osa_geometry((16, 112, 112), window, strides)


def test_window_starts_follow_captum():
    # (size - window) divisible by the stride: both grids end exactly at the border.
    assert window_starts(18, 6, 3) == window_starts(18, 6, 3, "inside") == [0, 3, 6, 9, 12]
    # Not divisible: captum adds a last window starting at 12 cut off to 4 px (12..15);
    # "inside" stops at 8 and leaves 14, 15 uncovered.
    assert window_starts(16, 6, 4) == [0, 4, 8, 12]
    assert window_starts(16, 6, 4, "inside") == [0, 4, 8]
    assert window_starts(8, 8, 2) == [0]  # a window spanning the axis: one position
    boxes = window_boxes((9, 16, 16), (4, 6, 6), (2, 4, 4))
    assert boxes.shape == (n_windows((9, 16, 16), (4, 6, 6), (2, 4, 4)), 6) == (64, 6)
    assert boxes[-1].tolist() == [6, 12, 12, 9, 16, 16]  # truncated in all three axes


def test_mask_batches_are_streamed():
    shape = (9, 16, 16)
    boxes = window_boxes(shape, (4, 6, 6), (2, 4, 4))
    batches = list(window_mask_batches(boxes, shape, 5))
    assert [b.shape[0] for b in batches] == [5] * 12 + [4]
    masks = torch.cat(batches)
    assert masks.dtype == torch.bool and masks.shape == (64, *shape)
    t0, y0, x0, t1, y1, x1 = boxes[-1].tolist()
    expected = torch.zeros(shape, dtype=torch.bool)
    expected[t0:t1, y0:y1, x0:x1] = True
    assert torch.equal(masks[-1], expected)
    assert masks.any(0).all()  # captum's grid covers every voxel


# --- Against captum -------------------------------------------------------------------------


@pytest.mark.parametrize("shape, window, strides", [
    ((9, 16, 16), (4, 6, 6), (2, 4, 4)),  # no axis divisible: last windows cut off
    ((8, 24, 24), None, None),  # the default geometry (8, 3, 3) / (2, 2, 2): 21 % 2 != 0
])
def test_coverage_and_truncation_match_captum(shape, window, strides):
    """A sum model on a clip of ones: each window's drop is 3 × its (truncated) volume."""
    window, strides = osa_geometry(shape, window, strides)
    x = torch.ones(3, *shape)
    occ = Occlusion(lambda inp: inp.sum(dim=(1, 2, 3, 4), keepdim=True))
    expected = occ.attribute(x[None], sliding_window_shapes=(3, *window),
                             strides=(3, *strides), baselines=0, target=0)[0]
    ours = osa_saliency(x, lambda b: b.sum(dim=(1, 2, 3, 4)), 7, float(x.sum()), window,
                        strides)
    assert (expected > 0).all()  # captum leaves no voxel uncovered
    assert torch.equal(ours, expected[0])
    if shape == (9, 16, 16):  # the far corner is covered only by the cut-off 3 x 4 x 4 window
        assert ours[-1, -1, -1] == 3 * 3 * 4 * 4


@pytest.mark.parametrize("shape, window, strides", [
    ((8, 18, 18), (4, 6, 6), (2, 3, 3)),  # (size - window) divisible by the stride everywhere
    ((9, 16, 16), (4, 6, 6), (2, 4, 4)),  # divisible nowhere: captum cuts the last windows off
])
def test_matches_captum_occlusion(shape, window, strides):
    scorer = make_scorer(conv_net())
    x = clip(shape)
    engine = PerturbationEngine(scorer, x, target=1, batch_size=4)
    ours = osa_saliency(x, engine.score, engine.batch_size, engine.base_score, window, strides)
    attr = captum_map(scorer, x, 1, window, strides)
    assert torch.equal(attr[0], attr[1]) and torch.equal(attr[0], attr[2])
    assert ours.abs().max() > 1e-3  # the comparison is not between two zero maps
    torch.testing.assert_close(ours, attr[0], atol=1e-6, rtol=0)
    assert engine.passes.forward == 1 + n_windows(shape, window, strides)


def test_method_matches_captum_with_default_geometry():
    shape = (8, 24, 24)
    scorer = make_scorer(conv_net(seed=1))
    x = clip(shape, seed=1)
    engine = PerturbationEngine(scorer, x, target=2, batch_size=16)
    sal = get_method("osa").explain(engine, None).saliency
    attr = captum_map(scorer, x, 2, *osa_geometry(shape))
    assert sal.dtype == torch.float32 and sal.shape == shape
    torch.testing.assert_close(sal, attr[0], atol=1e-6, rtol=0)


def test_inside_edge_equals_captum_where_grids_coincide():
    """Full windows only: equal to captum on voxels no cut-off window reaches, 0 on the strip."""
    shape, window, strides = (9, 16, 16), (4, 6, 6), (2, 4, 4)
    scorer = make_scorer(conv_net())
    x = clip(shape)
    engine = PerturbationEngine(scorer, x, target=1, batch_size=8)
    inside = osa_saliency(x, engine.score, 8, engine.base_score, window, strides,
                          edge="inside")
    attr = captum_map(scorer, x, 1, window, strides)[0]
    # inside starts: t 0, 2, 4 (ends 8) and y, x 0, 4, 8 (end 14); captum adds t 6, y/x 12.
    assert engine.passes.forward == 1 + 3 * 3 * 3
    torch.testing.assert_close(inside[:6, :12, :12], attr[:6, :12, :12], atol=1e-6, rtol=0)
    assert (inside[8] == 0).all() and (inside[:, 14:] == 0).all()
    assert (inside[:, :, 14:] == 0).all()
    assert (attr[8] != 0).any()  # captum does cover the strip
    assert not torch.allclose(inside[6:8, :12, :12], attr[6:8, :12, :12], atol=1e-6)


# --- The method through the engine ----------------------------------------------------------


def test_batch_size_invariance_and_pass_count():
    shape = (8, 16, 16)
    window, strides = osa_geometry(shape)
    assert (window, strides) == ((8, 2, 2), (2, 1, 1))
    count = n_windows(shape, window, strides)
    assert count == 15 * 15
    scorer = make_scorer(conv_net())
    x = clip(shape, seed=3)
    maps = []
    for batch_size in (1, 3, 64):
        engine = PerturbationEngine(scorer, x, target=0, batch_size=batch_size)
        assert engine.passes.forward == 1
        maps.append(OSA().explain(engine, None).saliency)
        assert engine.passes.forward == 1 + count
        assert engine.passes.backward == 0
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], atol=1e-6, rtol=0)


def test_region_only_network():
    shape = (16, 24, 24)
    region = (slice(10, 16), slice(4, 10), slice(14, 20))
    scorer = make_scorer(RegionModel(region))
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0)) + 0.5  # all > 0
    engine = PerturbationEngine(scorer, x, target=0, batch_size=32)
    sal = OSA().explain(engine, None).saliency  # window (8, 3, 3), strides (2, 2, 2)
    assert engine.passes.forward == 1 + 5 * 12 * 12
    t, y, xx = (int(i) for i in torch.nonzero(sal == sal.max())[0])
    assert 10 <= t < 16 and 4 <= y < 10 and 14 <= xx < 20
    inside = sal[region]
    far = torch.cat([sal[:2].flatten(), sal[:, 16:, :8].flatten()])  # no window reaches region
    assert inside.min() > 0
    assert inside.min() > far.max()
    assert (far == 0).all()


def test_fill_option_is_used():
    """On a constant clip the blur fill changes nothing (map 0); the mean fill does."""
    shape = (8, 16, 16)
    scorer = make_scorer(SumModel(scale=1e-3))
    x = torch.ones(3, *shape)
    maps = {}
    for fill in ("mean", "blur"):
        engine = PerturbationEngine(scorer, x, target=0, batch_size=32)
        maps[fill] = get_method("osa", MethodOptions(fill=fill)).explain(engine, None).saliency
    assert (maps["mean"] > 0).all()
    torch.testing.assert_close(maps["blur"], torch.zeros(shape), atol=1e-7, rtol=0)


# --- The cuboid as an option (--osa-window, --osa-strides) ------------------------------------


@pytest.mark.parametrize("window,strides", [((2, 6, 6), None), (None, (4, 3, 3)),
                                            ((2, 6, 6), (2, 6, 6))])
def test_the_cuboid_options_give_captums_map_for_that_geometry(window, strides):
    """Each option replaces its half of the paper's geometry as given; the other half keeps its
    scaled default; the map and the pass count are captum's for the resulting geometry."""
    shape = (8, 24, 24)
    scorer = make_scorer(conv_net(seed=2))
    x = clip(shape, seed=2)
    engine = PerturbationEngine(scorer, x, target=1, batch_size=16)
    options = MethodOptions(osa_window=window, osa_strides=strides)
    sal = get_method("osa", options).explain(engine, None).saliency
    geometry = osa_geometry(shape, window, strides)
    assert geometry[0] == (window or (8, 3, 3)) and geometry[1] == (strides or (2, 2, 2))
    assert engine.passes.forward == 1 + n_windows(shape, *geometry)
    torch.testing.assert_close(sal, captum_map(scorer, x, 1, *geometry)[0], atol=1e-6, rtol=0)
    default = get_method("osa").explain(PerturbationEngine(scorer, x, target=1), None).saliency
    assert not torch.allclose(sal, default, atol=1e-6)


def test_a_short_cuboid_localises_in_time_where_the_papers_smears():
    """A network that sees only frames 6–7: a 2-frame cuboid puts all of the map's mass there;
    the paper's 8-frame cuboid spreads it over every frame a covering window reaches."""
    shape = (16, 24, 24)
    region = (slice(6, 8), slice(0, 24), slice(0, 24))
    scorer = make_scorer(RegionModel(region))
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(1)) + 0.5
    mass = {}
    for window in ((2, 3, 3), None):
        engine = PerturbationEngine(scorer, x, target=0, batch_size=64)
        sal = get_method("osa", MethodOptions(osa_window=window, osa_strides=(2, 2, 2))
                         ).explain(engine, None).saliency
        mass[window] = float(sal[6:8].sum() / sal.sum())
    assert mass[(2, 3, 3)] == pytest.approx(1.0)
    assert mass[None] < 0.5


@pytest.mark.parametrize("changes,needle", [
    (dict(osa_window=(20, 3, 3)), "--osa-window does not fit 8 × 24 × 24 clips"),
    (dict(osa_window=(1, 3, 3)), "stride 2 larger than the window 1 on T"),
    (dict(osa_strides=(2, 0, 2)), "--osa-strides does not fit"),
])
def test_a_cuboid_that_does_not_fit_the_clips_stops_the_run_in_one_line(changes, needle):
    from pipeline.config import RunConfig

    with pytest.raises(ValueError) as err:
        RunConfig(input="in", output="out", model="tiny", size=24, num_frames=8,
                  methods=("osa",), **changes).resolve()
    assert needle in str(err.value) and "\n" not in str(err.value)
