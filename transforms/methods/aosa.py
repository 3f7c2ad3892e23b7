"""Exact AOSA (paper §3.2, Eq. 2) and AOSA_SGL (single tube masks, no integration).

Each integrated mask Ω̂_i (a *keep* mask: 0 where occluded) is applied as Ω̂_i ⊙ V with the
occluded voxels set to 0 in normalised space (the dataset-mean colour), and scored by f, the
softmax probability of the target class. Two aggregations of the N scores are offered:

``paper`` — Eq. 2 exactly:  S = 1/N · Σ_i f(Ω̂_i ⊙ V) · Ω̂_i.
    A voxel scores high when the masks that *keep* it score high. Because the tube boxes cover
    the frame unevenly (borders, frame-outs, integration), voxels that few masks occlude score
    high whatever the network does: with a network that looks at one region only, the frame
    corners can outrank that region (tests/test_aosa.py shows it).

``mean`` (default) — the importance of Eq. 5, f(V) − f(Ω̂_i ⊙ V), averaged over the masks that
    occlude each voxel:  S(x) = Σ_i (f(V) − f_i)(1 − Ω̂_i(x)) / Σ_i (1 − Ω̂_i(x)), 0 where no
    mask occludes x. Without the coverage division this is Eq. 2 with f replaced by
    f − f(V) (what the reference code does) up to sign and a per-clip constant; the division
    removes the coverage bias, as captum's Occlusion averages overlapping windows. The map is
    in probability units, the same as AOSA-approx's Eq. 5 estimates.
"""

from __future__ import annotations

import torch

from transforms.masks import mask_members, occlusion_masks
from transforms.methods.base import Explanation, Method, register_method
from transforms.scoring import Scorer
from transforms.tubes import Tubes

AGGREGATIONS = ("mean", "paper")


def aosa_saliency(x: torch.Tensor, boxes: torch.Tensor, partners: torch.Tensor,
                  score_fn, batch_size: int, base_score: float, aggregation: str = "mean"
                  ) -> torch.Tensor:
    """Score all N integrated masks, rasterised ``batch_size`` at a time, and aggregate.

    Args:
        x: normalised clip (3, T, H, W) on the device.
        boxes: int (N, T, 4) tube boxes on the device.
        partners: int64 (N, K) on the device (K = 0: single masks).
        score_fn: ``(B, 3, T, H, W) -> (B,)`` target-class probabilities.
        batch_size: masks scored per forward batch.
        base_score: f(V), the unoccluded clip's target probability (used by ``mean``).
        aggregation: ``mean`` or ``paper`` (module docstring).

    Returns:
        float32 (T, H, W) on the device.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}")
    n, frame_size = boxes.shape[0], (x.shape[2], x.shape[3])
    num = torch.zeros(x.shape[1:], dtype=torch.float32, device=x.device)
    den = torch.zeros_like(num)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n), device=x.device)
        occluded = occlusion_masks(boxes, mask_members(idx, partners), frame_size)
        occ = occluded.float()  # (B, T, H, W)
        keep = 1.0 - occ
        scores = score_fn(x.unsqueeze(0) * keep.unsqueeze(1)).float()  # (B,)
        if aggregation == "paper":
            num += torch.einsum("b,bthw->thw", scores, keep)
        else:
            num += torch.einsum("b,bthw->thw", base_score - scores, occ)
            den += occ.sum(0)
    if aggregation == "paper":
        return num / n
    return torch.where(den > 0, num / den.clamp(min=1.0), torch.zeros_like(num))


class _TubeOcclusion(Method):
    needs_tubes = True
    integrate = True

    def __init__(self, aggregation: str = "mean") -> None:
        self.aggregation = aggregation

    def explain(self, scorer: Scorer, x: torch.Tensor, target: int, tubes: Tubes | None,
                batch_size: int) -> Explanation:
        if tubes is None:
            raise ValueError(f"{self.name} needs tube masks")
        if not self.integrate:
            tubes = tubes.without_integration()
        boxes = torch.from_numpy(tubes.boxes).to(x.device)
        partners = torch.from_numpy(tubes.partners).to(x.device)
        base = float(scorer.target_scores(x.unsqueeze(0), target)[0])
        sal = aosa_saliency(x, boxes, partners,
                            lambda batch: scorer.target_scores(batch, target), batch_size,
                            base, self.aggregation)
        return Explanation(sal.cpu(), forward_passes=tubes.num_masks + 1)


@register_method("aosa")
class AOSA(_TubeOcclusion):
    """Integrated tube masks (each mask with its K most co-occurring partners)."""

    name = "aosa"
    integrate = True


@register_method("aosa_sgl")
class AOSASingle(_TubeOcclusion):
    """Single tube masks (AOSA_SGL in the paper's tables)."""

    name = "aosa_sgl"
    integrate = False
