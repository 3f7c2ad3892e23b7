"""AOSA saliency: against an independent dense implementation, batching, a region-only model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.registry import get_spec
from tests.test_tubes import constant_flow
from transforms.masks import mask_members, occlusion_masks
from transforms.methods import get_method
from transforms.methods.base import MethodOptions
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer
from transforms.tubes import Tubes, build_tubes


def dense_reference(x: np.ndarray, tubes: Tubes, score, integrate: bool, aggregation: str
                    ) -> np.ndarray:
    """Both aggregations with dense numpy masks, written independently of transforms.masks."""
    n, t = tubes.boxes.shape[:2]
    h, w = tubes.frame_size
    keep = np.ones((n, t, h, w))
    for i in range(n):
        members = [i] + (list(tubes.partners[i]) if integrate else [])
        for j in members:
            for f in range(t):
                x0, y0, x1, y1 = tubes.boxes[j, f]
                keep[i, f, y0:y1, x0:x1] = 0.0
    scores = np.array([score(x * keep[i][None]) for i in range(n)])
    if aggregation == "paper":  # Eq. 2
        return (scores[:, None, None, None] * keep).sum(0) / n
    if aggregation == "reference":  # the authors' code: sum (p_i - p_0) m_i / mean(m_i) / N
        return sum((scores[i] - score(x)) * keep[i] / keep[i].mean() for i in range(n)) / n
    drop = score(x) - scores
    occ = 1.0 - keep
    cover = occ.sum(0)
    return np.where(cover > 0, (drop[:, None, None, None] * occ).sum(0) / np.maximum(cover, 1), 0)


class RegionModel(nn.Module):
    """Two classes; class 0's logit is 4 × the mean of channel 0 inside ``region`` only."""

    def __init__(self, region: tuple[slice, slice]):
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys, xs = self.region
        v = x[:, 0, :, ys, xs].mean(dim=(1, 2, 3)) * 4.0
        return torch.stack([v, torch.zeros_like(v)], dim=1)


@pytest.fixture
def moving_tubes():
    flow = constant_flow(8, 32, 32, 1.0, 0.5)
    return build_tubes(flow, stride=8, box_hw=(8, 8), topk=2)


def make_scorer(model: nn.Module) -> Scorer:
    return Scorer(model, get_spec("tiny"), torch.device("cpu"))


def explain(method: str, scorer: Scorer, x: torch.Tensor, target: int, tubes: Tubes,
            batch_size: int, aggregation: str = "mean", **engine_kw):
    """(map (T, H, W) numpy, engine) of one method on one clip."""
    engine = PerturbationEngine(scorer, x, target, batch_size=batch_size, **engine_kw)
    sal = get_method(method, MethodOptions(aggregation=aggregation)).explain(engine, tubes)
    return sal.saliency.numpy(), engine


@pytest.mark.parametrize("aggregation", ["mean", "paper", "reference"])
@pytest.mark.parametrize("method", ["aosa", "aosa_sgl"])
def test_matches_independent_dense_implementation(moving_tubes, method, aggregation):
    model = RegionModel((slice(8, 20), slice(4, 16)))
    scorer = make_scorer(model)
    x = torch.randn(3, 8, 32, 32, generator=torch.Generator().manual_seed(0)) + 1.0

    def score(v: np.ndarray) -> float:
        logits = model(torch.from_numpy(v).float()[None])
        return torch.softmax(logits, 1)[0, 0].item()

    got, engine = explain(method, scorer, x, 0, moving_tubes, 5, aggregation)
    want = dense_reference(x.numpy(), moving_tubes, score, method == "aosa", aggregation)
    assert engine.passes.forward == moving_tubes.num_masks + 1 == 17  # N masks + clean clip
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 16, 64])
def test_batch_size_does_not_change_the_map(moving_tubes, batch_size):
    torch.manual_seed(0)
    from models.tiny import TinyVideoNet

    scorer = make_scorer(TinyVideoNet(4))
    x = torch.randn(3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    ref, _ = explain("aosa", scorer, x, 2, moving_tubes, 16)
    got, _ = explain("aosa", scorer, x, 2, moving_tubes, batch_size)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


REGION = (slice(20, 28), slice(4, 12))  # rows 20..27, cols 4..11


def region_saliency(aggregation: str) -> np.ndarray:
    flow = constant_flow(8, 32, 32, 0.0, 0.0)
    tubes = build_tubes(flow, stride=4, box_hw=(8, 8), topk=0)
    scorer = make_scorer(RegionModel(REGION))
    x = torch.ones(3, 8, 32, 32)
    return explain("aosa_sgl", scorer, x, 0, tubes, 8, aggregation)[0]


def test_region_only_model_puts_saliency_in_the_region():
    sal = region_saliency("mean")
    region = REGION
    inside = np.zeros((32, 32), dtype=bool)
    inside[region] = True
    for f in range(8):
        r, c = np.unravel_index(np.argmax(sal[f]), sal[f].shape)
        assert inside[r, c], (f, r, c)
    # Every in-region voxel outranks every voxel far from the region (more than a box away).
    far = np.ones((32, 32), dtype=bool)
    far[12:32, 0:20] = False
    assert sal[:, inside].min() > sal[:, far].max()


def test_occlusion_masks_unite_partner_boxes():
    boxes = torch.tensor([[[0, 0, 2, 2]], [[2, 2, 4, 4]], [[0, 0, 0, 0]]])  # (N=3, T=1, 4)
    partners = torch.tensor([[1], [2], [0]])
    occ = occlusion_masks(boxes, mask_members(torch.tensor([0, 1, 2]), partners), (4, 4))
    assert occ.shape == (3, 1, 4, 4)
    assert occ[0, 0].sum() == 8 and occ[0, 0, 0, 0] and occ[0, 0, 3, 3]
    assert occ[1, 0].sum() == 4 and occ[1, 0, 2, 2]  # partner 2 occludes nothing
    assert occ[2, 0].sum() == 4 and occ[2, 0, 1, 1]


def test_paper_aggregation_rewards_rarely_occluded_border_voxels():
    """Eq. 2 literally: a corner voxel covered by one clipped box outranks the true region.

    This is the coverage bias that makes ``mean`` the default (documented in docs/METHODS.md).
    """
    sal = region_saliency("paper")
    assert sal[0, 31, 0] > sal[0, 23, 7]
    assert np.unravel_index(np.argmax(sal[0]), (32, 32)) not in [
        (r, c) for r in range(20, 28) for c in range(4, 12)]


class MeanModel(nn.Module):
    """Two classes: the clip's mean and 0; records the shape of every batch it scores."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        v = x.mean(dim=(1, 2, 3, 4))
        return torch.stack([v, torch.zeros_like(v)], dim=1)


@pytest.mark.parametrize("stride", [8, 4, 2])
def test_dense_tensors_never_exceed_the_batch_size(monkeypatch, stride):
    """Peak memory is bounded by --batch-size: masks are rasterised chunk by chunk, whatever N."""
    import transforms.masks as masks_mod

    seen: list[int] = []
    real = masks_mod.occlusion_masks

    def spy(boxes, members, frame_size):
        out = real(boxes, members, frame_size)
        seen.append(out.shape[0])
        return out

    monkeypatch.setattr(masks_mod, "occlusion_masks", spy)
    tubes = build_tubes(constant_flow(4, 32, 32, 1.0, 0.0), stride, (8, 8), 3)
    model = MeanModel()
    explain("aosa", make_scorer(model), torch.randn(3, 4, 32, 32), 0, tubes, 5)
    assert max(seen) <= 5 and sum(seen) == tubes.num_masks == (32 // stride) ** 2
    assert model.shapes[0] == (1, 3, 4, 32, 32)  # the engine's clean forward
    assert all(s[0] <= 5 and s[1:] == (3, 4, 32, 32) for s in model.shapes)
    assert sum(s[0] for s in model.shapes) == tubes.num_masks + 1
