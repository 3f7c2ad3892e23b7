"""Box sums and painted boxes (inclusion–exclusion over summed-area tables) against dense masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transforms.masks import (
    member_subsets,
    occlusion_masks,
    paint_union_boxes,
    summed_area_table,
    union_box_areas,
    union_box_sums,
)

SHAPE = (5, 13, 11)  # (T, H, W): odd sizes


def random_boxes(n: int, seed: int) -> torch.Tensor:
    """int32 (N, T, 4) boxes with overlaps, boxes touching the borders, and empty boxes."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = SHAPE
    x = torch.randint(0, w + 1, (n, t, 2), generator=g).sort(-1).values
    y = torch.randint(0, h + 1, (n, t, 2), generator=g).sort(-1).values
    boxes = torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)
    boxes[torch.rand(n, t, generator=g) < 0.2] = 0  # the tube does not occlude there
    return boxes.int()


def test_member_subsets_signs():
    member, sign = member_subsets(3)
    assert member.shape == (7, 3)
    assert sign.tolist() == [1 if int(m.sum()) % 2 else -1 for m in member]


@pytest.mark.parametrize("m", [1, 2, 4, 6])
def test_union_sums_areas_and_paint_equal_dense_masks(m):
    boxes = random_boxes(20, seed=m)
    g = torch.Generator().manual_seed(10 + m)
    members = torch.randint(0, 20, (9, m), generator=g)
    members[0, -1] = members[0, 0]  # a repeated member changes nothing
    dense = occlusion_masks(boxes, members, SHAPE[1:])  # (9, T, H, W)
    values = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    weights = torch.randn(9, generator=g, dtype=torch.float64)
    want_sums = torch.einsum("thw,bthw->b", values, dense.double())
    got_sums = union_box_sums(summed_area_table(values), boxes, members)
    np.testing.assert_allclose(got_sums.numpy(), want_sums.numpy(), rtol=1e-12, atol=1e-10)
    assert union_box_areas(boxes, members).tolist() == dense.sum((1, 2, 3)).tolist()
    want_paint = torch.einsum("b,bthw->thw", weights, dense.double())
    got_paint = paint_union_boxes(weights, boxes, members, SHAPE)
    np.testing.assert_allclose(got_paint.numpy(), want_paint.numpy(), rtol=1e-12, atol=1e-10)


def test_no_members_sum_to_zero():
    boxes, members = random_boxes(3, seed=0), torch.zeros((2, 0), dtype=torch.int64)
    sat = summed_area_table(torch.ones(SHAPE))
    assert union_box_sums(sat, boxes, members).tolist() == [0.0, 0.0]
    assert float(paint_union_boxes(torch.ones(2), boxes, members, SHAPE).abs().sum()) == 0.0
