"""AOSA-approx: exact on linear networks, pass budget, Tukey fences, adjustment, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import transforms.masks as masks_mod
import transforms.methods.aosa as aosa_mod
from models.registry import get_spec
from models.tiny import TinyVideoNet
from tests.test_tubes import constant_flow
from transforms.masks import tube_mask_batches
from transforms.methods.aosa import aggregate_boxes
from transforms.methods.aosa_approx import (  # also registers the approx methods
    approx_scores,
    box_mask_sums,
    dense_mask_sums,
    input_expansion,
    path_alphas,
    taylor_changes,
    taylor_direction,
    tukey_fences,
    tukey_outliers,
)
from transforms.methods.base import MethodOptions, get_method
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer
from transforms.tubes import Tubes, build_tubes

SHAPE = (3, 8, 32, 32)
WINDOW = 12  # ~36 px at 112 px, scaled to 32 px
HOT = (slice(12, 16), slice(12, 16))


class LinearModel(nn.Module):
    """Three classes whose logits are fixed random linear functions of the whole input.

    ``hot`` adds ``hot`` × the mean of channel 0 in the 4 × 4 spot :data:`HOT` to class 1's
    logit: on :func:`hot_clip` the few masks over the spot change it most (Tukey outliers).
    """

    def __init__(self, seed: int = 0, hot: float = 0.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        numel = int(np.prod(SHAPE))
        weight = torch.randn(3, *SHAPE, generator=g) * 8.0 / numel**0.5
        weight[1, 0, :, HOT[0], HOT[1]] += hot / (8 * 4 * 4)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.tensor([0.5, -0.2, 0.1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bcthw,kcthw->bk", x, self.weight) + self.bias


class TwoRegionModel(nn.Module):
    """Two classes; class 0's logit is 2 × (mean of channel 0 in A − mean of channel 1 in B).

    Scored by its softmax probability (a sigmoid of that logit), so occluding A lowers the
    score, occluding B raises it, and the score saturates: both Tukey tails appear.
    """

    A = (slice(8, 20), slice(8, 20))
    B = (slice(20, 30), slice(16, 28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0, :, self.A[0], self.A[1]].mean(dim=(1, 2, 3))
        b = x[:, 1, :, self.B[0], self.B[1]].mean(dim=(1, 2, 3))
        v = 2.0 * (a - b)
        return torch.stack([v, torch.zeros_like(v)], dim=1)


def two_region_clip() -> torch.Tensor:
    x = 0.1 * torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))
    x[0, :, 8:20, 8:20] += 2.0
    x[1, :, 20:30, 16:28] += 2.0
    return x


def random_clip(seed: int = 1) -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(seed))


def hot_clip() -> torch.Tensor:
    x = random_clip()
    x[0, :, HOT[0], HOT[1]] += 3.0
    return x


def tubes_for(stride: int, topk: int) -> Tubes:
    return build_tubes(constant_flow(8, 32, 32, 1.0, 0.5), stride=stride, box_hw=(8, 8),
                       topk=topk)


def make_engine(model: nn.Module, x: torch.Tensor, target: int, batch_size: int = 8,
                score: str = "prob") -> PerturbationEngine:
    scorer = Scorer(model, get_spec("tiny"), torch.device("cpu"))
    return PerturbationEngine(scorer, x, target, score=score, batch_size=batch_size)


def at_input(**options) -> MethodOptions:
    """Options of the paper's expansion in the clip's voxels, which these tests are about (the
    expansion in a layer: tests/test_aosa_approx_layer.py)."""
    return MethodOptions(approx_at="input", **options)


def local_mean(aggregation: str = "mean") -> MethodOptions:
    """The paper's AOSA-approx: conditional (local-mean) fill and §3.5.3's adjustment on."""
    return at_input(aggregation=aggregation, fill="local_mean", fill_window=WINDOW,
                         approx_adjust=True)


def explain(method: str, engine: PerturbationEngine, tubes: Tubes,
            options: MethodOptions) -> np.ndarray:
    return get_method(method, options).explain(engine, tubes).saliency.numpy()


def estimates(engine: PerturbationEngine, tubes: Tubes, fill, adjust: bool, steps: int = 0
              ) -> torch.Tensor:
    """approx_scores of the integrated masks of ``tubes`` on ``engine``."""
    boxes, partners = torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners)
    bs = engine.batch_size

    def masks_of(idx):
        return tube_mask_batches(boxes, partners, (32, 32), bs, idx)

    return approx_scores(engine.x, fill, input_expansion(engine.x, fill, engine.score_with_grad),
                         box_mask_sums(boxes, partners), masks_of,
                         engine.base_score, bs, adjust=adjust, steps=steps)


def exact_scores(engine: PerturbationEngine, tubes: Tubes, fill) -> torch.Tensor:
    boxes, partners = torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners)
    masks = tube_mask_batches(boxes, partners, (32, 32), engine.batch_size)
    return torch.cat([s for _, s in engine.perturb(masks, fill)]).double()


# --- Known answers of the pure functions ----------------------------------------------------


def test_registered():
    assert get_method("aosa_approx").name == "aosa_approx"
    assert get_method("aosa_sgl_approx").name == "aosa_sgl_approx"
    assert get_method("aosa_approx").default_fill == "local_mean"  # conditional sampling


def test_default_fill_is_the_local_mean():
    tubes, x, model = tubes_for(8, 2), two_region_clip(), TwoRegionModel()
    got = explain("aosa_approx", make_engine(model, x, 0), tubes,
                  at_input(fill_window=WINDOW))
    want = explain("aosa_approx", make_engine(model, x, 0), tubes,
                   at_input(fill="local_mean", fill_window=WINDOW))
    other = explain("aosa_approx", make_engine(model, x, 0), tubes, at_input(fill="mean"))
    np.testing.assert_array_equal(got, want)
    assert np.abs(other - want).max() > 1e-3


def test_the_adjustment_is_off_by_default():
    """Default: the plain first-order estimates, one gradient (docs/METHODS.md says why);
    ``approx_adjust`` adds the outlying tails' gradients on a clip that has outliers."""
    tubes, x, model = tubes_for(4, 2), two_region_clip(), TwoRegionModel()
    plain = make_engine(model, x, 0)
    explain("aosa_approx", plain, tubes, at_input(fill_window=WINDOW))
    adjusted = make_engine(model, x, 0)
    explain("aosa_approx", adjusted, tubes, local_mean())
    assert (plain.passes.backward, adjusted.passes.backward) == (1, 2)  # one tail here


@pytest.mark.parametrize("values,fences,low,high", [
    # sorted [-10, 1, 2, 3, 4, 5, 20]: q1 = 1.5, q3 = 4.5, IQR = 3 → fences (-3, 9)
    ([3, 20, 1, 4, -10, 2, 5], (-3.0, 9.0), [4], [1]),
    # values exactly on the fences are not outliers
    ([3, 9, 1, 4, -3, 2, 5], (-3.0, 9.0), [], []),
    # [0..8, 100]: q1 = 2.25, q3 = 6.75, IQR = 4.5 → fences (-4.5, 13.5)
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 100], (-4.5, 13.5), [], [9]),
    # IQR = 0: anything off the common value is an outlier
    ([0, 0, 0, 0, 1, 0, -2], (0.0, 0.0), [6], [4]),
    ([2, 2, 2], (2.0, 2.0), [], []),
    ([7], (7.0, 7.0), [], []),
])
def test_tukey_known_answers(values, fences, low, high):
    v = torch.tensor(values, dtype=torch.float64)
    assert tukey_fences(v) == pytest.approx(fences)
    lo, hi = tukey_outliers(v)
    assert torch.nonzero(lo).flatten().tolist() == low
    assert torch.nonzero(hi).flatten().tolist() == high
    q1, q3 = np.percentile(values, [25, 75])  # numpy's default interpolation
    assert fences == pytest.approx((q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)))


def test_tukey_empty_input_has_no_outliers():
    lo, hi = tukey_outliers(torch.zeros(0))
    assert lo.shape == hi.shape == (0,)


def test_taylor_changes_match_the_dense_first_order_term():
    g = torch.Generator().manual_seed(3)
    x, grad, fill = torch.randn(*SHAPE, generator=g), torch.randn(*SHAPE, generator=g), 0.3
    masks = torch.rand(10, *SHAPE[1:], generator=g) > 0.7
    got = taylor_changes(taylor_direction(grad, x, fill), masks.split(3))
    x64 = x.double()
    want = [(grad.double() * (torch.where(m, fill, x64) - x64)).sum() for m in masks]
    np.testing.assert_allclose(got.numpy(), torch.stack(want).numpy(), rtol=1e-10, atol=1e-9)
    assert taylor_changes(torch.zeros(SHAPE[1:]), []).shape == (0,)


# --- Exactness on a linear network ----------------------------------------------------------


@pytest.mark.parametrize("hot", [0.0, 10.0])
@pytest.mark.parametrize("aggregation", ["mean", "paper", "reference"])
@pytest.mark.parametrize("approx,exact", [("aosa_approx", "aosa"),
                                          ("aosa_sgl_approx", "aosa_sgl")])
def test_equals_exact_aosa_on_a_linear_network(approx, exact, aggregation, hot):
    """A logit linear in the input: the Taylor estimate is exact, so the maps are equal.

    ``hot`` > 0 puts outliers in the estimates: the adjusted ones must be exact too.
    """
    tubes, model = tubes_for(4, 2), LinearModel(hot=hot)
    x = hot_clip() if hot else random_clip()
    options = local_mean(aggregation)
    want = explain(exact, make_engine(model, x, 1, score="logit"), tubes, options)
    engine = make_engine(model, x, 1, score="logit")
    got = explain(approx, engine, tubes, options)
    assert np.abs(want).max() > 0.05
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
    assert engine.passes.backward <= 3
    assert hot == 0 or engine.passes.backward >= 2  # the adjustment ran


def test_adjusted_estimates_are_exact_on_a_linear_network():
    """With outliers in the tails, the re-expansion around V̂_e is exact too."""
    tubes, x = tubes_for(4, 0), hot_clip()
    engine = make_engine(LinearModel(hot=10.0), x, 1, score="logit")
    fill = engine.fill("local_mean", window=WINDOW)
    plain = estimates(engine, tubes, fill, adjust=False)
    lo, hi = tukey_outliers(plain - engine.base_score)
    assert bool((lo | hi).any())
    adjusted = estimates(engine, tubes, fill, adjust=True)
    np.testing.assert_allclose(adjusted.numpy(), exact_scores(engine, tubes, fill).numpy(),
                               rtol=2e-5, atol=2e-5)  # float32 forwards of ~30


# --- Pass budget ----------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [8, 4, 2])
@pytest.mark.parametrize("topk", [0, 2])
@pytest.mark.parametrize("model,clip", [(TwoRegionModel, two_region_clip),
                                        (LinearModel, random_clip)])
def test_backward_passes_are_one_plus_one_per_tail(stride, topk, model, clip):
    tubes, x = tubes_for(stride, topk), clip()
    probe = make_engine(model(), x, 0)
    plain = estimates(probe, tubes, probe.fill("local_mean", window=WINDOW), adjust=False)
    tails = sum(bool(t.any()) for t in tukey_outliers(plain - probe.base_score))
    engine = make_engine(model(), x, 0)
    explain("aosa_approx" if topk else "aosa_sgl_approx", engine, tubes, local_mean())
    assert engine.passes.backward == 1 + tails <= 3
    assert engine.passes.forward == 1 + 1 + tails <= 1 + 3  # clean + gradient forwards


def test_both_tails_cost_three_backward_passes():
    engine = make_engine(TwoRegionModel(), two_region_clip(), 0)
    explain("aosa_sgl_approx", engine, tubes_for(4, 0), local_mean())
    assert (engine.passes.forward, engine.passes.backward) == (4, 3)


def test_no_outliers_cost_one_backward_pass():
    # A constant clip: the local mean equals the clip, every change is 0, no outlier.
    engine = make_engine(TinyVideoNet(4), torch.full(SHAPE, 0.5), 2)
    sal = explain("aosa_approx", engine, tubes_for(4, 2), local_mean())
    assert (engine.passes.forward, engine.passes.backward) == (2, 1)
    assert np.abs(sal).max() == 0.0


def test_evenly_spread_changes_cost_one_backward_pass():
    """Single 8 × 8 tiles of a static clip with changes 1..16: no outlier, 1 backward."""
    tubes = build_tubes(constant_flow(8, 32, 32, 0.0, 0.0), stride=8, box_hw=(8, 8), topk=0)
    model = LinearModel()
    tile = torch.arange(1, 17, dtype=torch.float32).view(4, 4)
    model.weight.zero_()
    model.weight[0, 0] = tile.repeat_interleave(8, 0).repeat_interleave(8, 1) / (8 * 64)
    engine = make_engine(model, torch.ones(SHAPE), 0, score="logit")
    sal = explain("aosa_sgl_approx", engine, tubes, at_input(fill="mean"))
    assert (engine.passes.forward, engine.passes.backward) == (2, 1)
    want = tile.repeat_interleave(8, 0).repeat_interleave(8, 1)  # drop of each tile
    np.testing.assert_allclose(sal, want.expand(8, 32, 32).numpy(), atol=1e-5)


# --- Derivative adjustment on a non-linear network ------------------------------------------


@pytest.mark.parametrize("stride,topk", [(4, 0), (2, 0), (4, 2), (2, 2)])
def test_adjustment_moves_outliers_toward_exact_scores(stride, topk):
    tubes = tubes_for(stride, topk)
    engine = make_engine(TwoRegionModel(), two_region_clip(), 0)
    fill = engine.fill("local_mean", window=WINDOW)
    exact = exact_scores(engine, tubes, fill)
    plain = estimates(engine, tubes, fill, adjust=False)
    adjusted = estimates(engine, tubes, fill, adjust=True)
    lo, hi = tukey_outliers(plain - engine.base_score)
    out = lo | hi
    assert int(out.sum()) >= 2
    err_plain = (plain - exact).abs()[out]
    err_adjusted = (adjusted - exact).abs()[out]
    assert err_adjusted.mean() < 0.5 * err_plain.mean()
    assert torch.equal(adjusted[~out], plain[~out])  # inliers untouched
    for tail, pick in ((lo, torch.argmin), (hi, torch.argmax)):  # the extreme masks are exact
        if tail.any():
            idx = torch.nonzero(tail).flatten()
            e = idx[pick(plain[idx])]
            assert float(adjusted[e]) == pytest.approx(float(exact[e]), abs=1e-6)


# --- Batching -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 3, 16, 64])
@pytest.mark.parametrize("model,clip,target", [(TwoRegionModel, two_region_clip, 0),
                                               (TinyVideoNet, random_clip, 2)])
def test_batch_size_does_not_change_the_map(batch_size, model, clip, target):
    tubes, x = tubes_for(4, 2), clip()
    torch.manual_seed(0)
    net = model()
    ref_engine = make_engine(net, x, target, batch_size=16)
    ref = explain("aosa_approx", ref_engine, tubes, local_mean())
    engine = make_engine(net, x, target, batch_size=batch_size)
    got = explain("aosa_approx", engine, tubes, local_mean())
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    assert engine.passes.backward == ref_engine.passes.backward


def test_dense_tensors_never_exceed_the_batch_size(monkeypatch):
    seen: list[int] = []

    def spy(real):
        def wrapped(boxes, members, frame_size):
            out = real(boxes, members, frame_size)
            seen.append(out.shape[0])
            return out
        return wrapped

    monkeypatch.setattr(masks_mod, "occlusion_masks", spy(masks_mod.occlusion_masks))
    engine = make_engine(TwoRegionModel(), two_region_clip(), 0, batch_size=5)
    grads: list[int] = []
    real_grad = engine.score_with_grad
    engine.score_with_grad = lambda batch: (grads.append(batch.shape[0]), real_grad(batch))[1]
    tubes = tubes_for(2, 2)
    explain("aosa_approx", engine, tubes, local_mean())
    assert max(seen) <= 5 and sum(seen) == 2  # only the two tails' expansion points
    assert grads[0] == 1 and len(grads) == 2 and grads[1] == 2  # both tails in one call


# --- Box sums: equal to the dense masks -----------------------------------------------------


def moving_tubes(topk: int) -> Tubes:
    """Tubes on a clip with motion and frame-outs: overlapping, clipped and empty boxes."""
    return build_tubes(constant_flow(8, 32, 32, 2.5, -1.5), stride=4, box_hw=(8, 8), topk=topk)


@pytest.mark.parametrize("topk", [0, 1, 3, 5])
def test_box_sums_equal_the_dense_estimates(topk):
    tubes = moving_tubes(topk)
    assert (tubes.boxes[..., 2] == tubes.boxes[..., 0]).any()  # frame-outs: empty boxes
    boxes, partners = torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners)
    direction = torch.randn(SHAPE[1:], generator=torch.Generator().manual_seed(4)).double()

    def masks_of(idx):
        return tube_mask_batches(boxes, partners, (32, 32), 7, idx)

    dense = dense_mask_sums(masks_of, tubes.num_masks)
    fast = box_mask_sums(boxes, partners)
    np.testing.assert_allclose(fast(direction, None).numpy(), dense(direction, None).numpy(),
                               rtol=1e-10, atol=1e-10)
    some = torch.tensor([5, 0, 33, 5])
    np.testing.assert_allclose(fast(direction, some).numpy(), dense(direction, some).numpy(),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("aggregation", ["mean", "paper", "reference"])
@pytest.mark.parametrize("topk", [0, 3])
def test_box_aggregation_equals_the_dense_one(aggregation, topk):
    tubes = moving_tubes(topk)
    boxes, partners = torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners)
    scores = torch.rand(tubes.num_masks, generator=torch.Generator().manual_seed(5))
    pairs = zip(tube_mask_batches(boxes, partners, (32, 32), 6), scores.split(6), strict=True)
    want = aosa_mod.aggregate(pairs, tubes.num_masks, SHAPE[1:], 0.7, aggregation, "cpu")
    got = aggregate_boxes(scores, boxes, partners, SHAPE[1:], 0.7, aggregation)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_many_members_fall_back_to_dense_masks():
    """K + 1 above MAX_BOX_MEMBERS: rasterised masks, the same map as the box path's."""
    tubes = tubes_for(4, 8)  # 9 tubes per mask
    engine = make_engine(LinearModel(), random_clip(), 1, score="logit")
    got = explain("aosa_approx", engine, tubes, local_mean())
    want = explain("aosa", make_engine(LinearModel(), random_clip(), 1, score="logit"), tubes,
                   local_mean())
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


# --- The gradient along the path to the fill (--approx-steps) --------------------------------


class SeparableQuadratic(nn.Module):
    """Class 0's logit is Σ w ⊙ x² (no interaction between voxels), class 1's is 0: a mask's
    exact logit change is a sum over its own voxels, quadratic in the occlusion."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        numel = int(np.prod(SHAPE))
        self.register_buffer("weight", torch.randn(*SHAPE, generator=g) * 8.0 / numel**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.einsum("bcthw,cthw->b", x * x, self.weight)
        return torch.stack([v, torch.zeros_like(v)], dim=1)


@pytest.mark.parametrize("steps,alphas", [(0, (0.0,)), (1, (0.5,)),
                                          (4, (0.125, 0.375, 0.625, 0.875))])
def test_path_alphas_known_answers(steps, alphas):
    assert path_alphas(steps) == pytest.approx(alphas)


def test_path_alphas_rejects_negative_steps():
    with pytest.raises(ValueError, match="steps must be >= 0"):
        path_alphas(-1)


@pytest.mark.parametrize("steps", [1, 3])
def test_path_estimates_are_exact_on_a_separable_quadratic_network(steps):
    """No interaction between voxels and a gradient linear along the path: the midpoint rule
    gives every mask's exact change, where the Taylor term at the clip misses the curvature."""
    tubes, x = tubes_for(4, 2), random_clip()
    engine = make_engine(SeparableQuadratic(), x, 0, score="logit")
    fill = engine.fill("local_mean", window=WINDOW)
    exact = exact_scores(engine, tubes, fill).numpy()
    path = estimates(engine, tubes, fill, adjust=False, steps=steps).numpy()
    taylor = estimates(engine, tubes, fill, adjust=False, steps=0).numpy()
    np.testing.assert_allclose(path, exact, rtol=1e-4, atol=1e-4)
    assert np.abs(taylor - exact).max() > 100 * np.abs(path - exact).max()


def test_the_path_sums_to_the_whole_occlusion_on_a_real_network():
    """Σ over every voxel of the path direction → f(μ) − f(V) as K grows (completeness of
    the path integral), far closer than the Taylor term at the clip, on the tiny CNN's
    softmax probability."""
    from transforms.methods.aosa_approx import path_gradient

    x = hot_clip()
    torch.manual_seed(0)
    engine = make_engine(TinyVideoNet(3), x, 1)
    fill = engine.fill("local_mean", window=WINDOW)
    whole = float(engine.score(torch.as_tensor(fill).expand_as(x)[None].clone())[0])
    want = whole - engine.base_score
    errors = {}
    for steps in (0, 64):
        g = path_gradient(x, fill, engine.score_with_grad, steps, 8)
        errors[steps] = abs(float(taylor_direction(g, x, fill).sum()) - want)
    assert abs(want) > 1e-3
    assert errors[64] < 0.02 * abs(want) + 1e-6
    assert errors[64] < errors[0]


@pytest.mark.parametrize("steps", [0, 1, 5])
def test_path_steps_cost_their_backward_passes(steps):
    engine = make_engine(TinyVideoNet(3), random_clip(), 1, batch_size=2)
    explain("aosa_approx", engine, tubes_for(4, 2),
            at_input(fill="local_mean", fill_window=WINDOW, approx_steps=steps))
    assert engine.passes.backward == max(1, steps)
    assert engine.passes.forward == 1 + max(1, steps)


def test_path_batch_size_does_not_change_the_map():
    tubes, x = tubes_for(4, 2), random_clip()
    options = at_input(fill="local_mean", fill_window=WINDOW, approx_steps=5)
    torch.manual_seed(0)
    model = TinyVideoNet(3)
    maps = [explain("aosa_approx", make_engine(model, x, 1, batch_size=b), tubes, options)
            for b in (1, 2, 8)]
    assert np.abs(maps[0]).max() > 0
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps[0], maps[2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("steps", [0, 1, 2, 4])
def test_estimates_equal_captum_attributions_summed_per_mask(steps):
    """An independent implementation of the same estimate: captum's IntegratedGradients with
    the fill as baseline and its midpoint rule (``riemann_middle``, the same K points), or its
    plain input gradient (``Saliency``) at the one point of K = 0 (the clip) or K = 1 (half-way),
    times (V − μ); summed over each integrated tube mask m_i on the tiny CNN's softmax:
    f̂(V̂_i) = f(V) − Σ m_i ⊙ attribution."""
    from captum.attr import IntegratedGradients, Saliency

    tubes, x = tubes_for(4, 2), hot_clip()
    torch.manual_seed(0)
    model = TinyVideoNet(3).eval()
    engine = make_engine(model, x, 1)
    fill = engine.fill("local_mean", window=WINDOW)
    baseline = torch.as_tensor(fill, dtype=x.dtype).expand_as(x)[None].clone()

    def prob(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(batch).float(), dim=1)

    if steps <= 1:  # captum's midpoint rule needs 2 points or more: one gradient, at a
        point = x[None] + {0: 0.0, 1: 0.5}[steps] * (baseline - x[None])
        grad = Saliency(prob).attribute(point.requires_grad_(True), target=1, abs=False)
        attribution = grad * (x[None] - baseline)
    else:
        attribution = IntegratedGradients(prob).attribute(
            x[None].clone(), baselines=baseline, target=1, n_steps=steps,
            method="riemann_middle")
    boxes, partners = torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners)
    masks = torch.cat(list(tube_mask_batches(boxes, partners, (32, 32), 8))).double()
    per_mask = (masks[:, None] * attribution.double()).flatten(1).sum(1)  # (N,)
    want = (engine.base_score - per_mask).numpy()
    got = estimates(engine, tubes, fill, adjust=False, steps=steps).numpy()
    assert np.abs(want - engine.base_score).max() > 1e-3  # the masks do move the score
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

