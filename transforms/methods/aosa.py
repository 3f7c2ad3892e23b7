"""Exact AOSA (paper §3.2, Eq. 2) and AOSA_SGL (single tube masks, no integration).

Each integrated mask Ω̂_i (a *keep* mask: 0 where occluded) is applied as Ω̂_i ⊙ V with the
occluded voxels set to the fill (``--fill``; default 0 in normalised space, the dataset-mean
colour, as the reference code), and scored by f (``--score``; default the softmax probability of
the target class). Masks are streamed through the perturbation engine ``batch_size`` at a time.
Two aggregations of the N scores are offered:

``paper`` — Eq. 2 exactly:  S = 1/N · Σ_i f(Ω̂_i ⊙ V) · Ω̂_i.
    A voxel scores high when the masks that *keep* it score high. Because the tube boxes cover
    the frame unevenly (borders, frame-outs, integration), voxels that few masks occlude score
    high whatever the network does: with a network that looks at one region only, the frame
    corners can outrank that region (tests/test_aosa.py shows it).

``reference`` — the authors' code: S = 1/N · Σ_i (f_i − f(V)) · Ω̂_i / mean(Ω̂_i), i.e. Eq. 2
    with f(V) subtracted and each keep-mask divided by its kept fraction. Offered so the AOSA
    rows can be compared with the paper's published numbers; it ranks voxels differently from
    ``mean`` (measured in docs/METHODS.md), which changes deletion / insertion.

``mean`` (default) — the importance of Eq. 5, f(V) − f(Ω̂_i ⊙ V), averaged over the masks that
    occlude each voxel:  S(x) = Σ_i (f(V) − f_i)(1 − Ω̂_i(x)) / Σ_i (1 − Ω̂_i(x)), 0 where no
    mask occludes x. Without the coverage division this is Eq. 2 with f replaced by
    f − f(V) (what the reference code does) up to sign and a per-clip constant; the division
    removes the coverage bias, as captum's Occlusion averages overlapping windows. The map is
    in probability units, the same as AOSA-approx's Eq. 5 estimates.

Every tube method (AOSA, AOSA_SGL, AOSA-T and AOSA-T_SGL in :mod:`transforms.methods.aosa_t`,
AOSA-approx and AOSA_SGL-approx in :mod:`transforms.methods.aosa_approx`) is one body,
:meth:`TubeMethod.explain`: its masks (:meth:`TubeMethod.mask_set`) → their scores
(:meth:`TubeMethod.mask_scores`: occluded forwards through the engine here, first-order
estimates in AOSA-approx) → :func:`mask_map`. The variants differ only in those two steps.
"""

from __future__ import annotations

import numpy as np
import torch

from transforms.masks import (
    boxable,
    mask_members,
    paint_union_boxes,
    tube_mask_batches,
    union_box_areas,
)
from transforms.methods.base import FILL, SCORE, Explanation, Method, register_method
from transforms.options import Option, in_range
from transforms.perturbation import (
    PerturbationEngine,
    mean_drop_map,
)
from transforms.tubes import BOX_SIZE, STRIDE, TOPK, Tubes

AGGREGATION = Option(
    "aggregation", str, "mean", choices=("mean", "paper", "reference"),
    help="AOSA map: mean (score drop averaged over covering masks) | paper (Eq. 2) | reference "
         "(the authors' code)")
AGGREGATIONS = AGGREGATION.choices
INCREMENTAL_KEEP = Option(
    "incremental_keep", float, 1.0, check=in_range(0, 1, "(]"), hash_default=False,
    help="approximate incremental inference for the exact tube methods' occlusions: each layer "
         "recomputes only the changed cells carrying this share of its change (Krypton's "
         "projective-field thresholding); 1: exact full forwards (or --incremental)")

BOX_CHUNK = 1024
"""Masks handled at once by the box sums (bounds their temporaries: ~1 MB per 1024 masks, T = 16,
K = 3)."""


def aggregate(pairs, n: int, shape: tuple[int, int, int], base_score: float,
              aggregation: str, device: torch.device) -> torch.Tensor:
    """Turn (occlusion mask batch, scores) pairs into a map (module docstring).

    Args:
        pairs: iterable of (bool (B, T, H, W), (B,) scores), N masks in all.
        n: N.
        shape: (T, H, W).
        base_score: f(V), the clean clip's score (used by ``mean``).

    Returns:
        float32 (T, H, W) on ``device``.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}")
    if aggregation == "mean":
        return mean_drop_map(pairs, shape, base_score, device)
    num = torch.zeros(shape, dtype=torch.float32, device=device)
    for occluded, scores in pairs:
        keep = 1.0 - occluded.float()  # (B, T, H, W)
        if aggregation == "paper":
            weight = scores
        else:  # reference
            kept = keep.mean(dim=(1, 2, 3))  # (B,) mean(m_i); a mask keeping nothing adds 0
            weight = torch.where(kept > 0, (scores - base_score) / kept.clamp(min=1e-12),
                                 torch.zeros_like(kept))
        num += torch.einsum("b,bthw->thw", weight, keep)
    return num / n


def aggregate_boxes(scores: torch.Tensor, boxes: torch.Tensor, partners: torch.Tensor,
                    shape: tuple[int, int, int], base_score: float, aggregation: str
                    ) -> torch.Tensor:
    """:func:`transforms.methods.aosa.aggregate` of the N integrated masks, none of them dense.

    The three aggregations are weighted sums of the masks (or of their complements), painted
    box by box (:func:`transforms.masks.paint_union_boxes`).

    Args:
        scores: (N,) scores f_i of the masks.
        boxes: int (N, T, 4) tube boxes.
        partners: int64 (N, K), K + 1 <= :data:`~transforms.masks.MAX_BOX_MEMBERS`.
        shape: (T, H, W).
        base_score: f(V).
        aggregation: ``mean`` | ``paper`` | ``reference``.

    Returns:
        float32 (T, H, W) on ``boxes``' device.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}")
    n = boxes.shape[0]
    scores = scores.double().to(boxes.device)
    chunks = torch.arange(n, device=boxes.device).split(BOX_CHUNK)

    def paint(weights: torch.Tensor) -> torch.Tensor:  # Σ_i weights_i · m_i, float64 (T, H, W)
        total = torch.zeros(shape, dtype=torch.float64, device=boxes.device)
        for c in chunks:
            total += paint_union_boxes(weights[c], boxes, mask_members(c, partners), shape)
        return total

    if aggregation == "mean":
        num, den = paint(base_score - scores), paint(torch.ones_like(scores))
        den = den.round()  # coverage counts, integers up to rounding of the cumulative sums
        return torch.where(den > 0, num / den.clamp(min=1.0), torch.zeros_like(num)).float()
    if aggregation == "paper":
        weight = scores
    else:  # reference: divided by each keep-mask's kept fraction
        occluded = torch.cat([union_box_areas(boxes, mask_members(c, partners)) for c in chunks]
                             ) if n else scores.new_zeros(0)
        kept = 1.0 - occluded.double() / float(torch.tensor(shape).prod())
        weight = torch.where(kept > 0, (scores - base_score) / kept.clamp(min=1e-12),
                             torch.zeros_like(kept))
    return ((weight.sum() - paint(weight)) / n).float()  # Σ_i w_i (1 − m_i) / N


def mask_map(scores: torch.Tensor, boxes: torch.Tensor, partners: torch.Tensor,
             shape: tuple[int, int, int], base_score: float, aggregation: str,
             batch_size: int) -> torch.Tensor:
    """The map of N box masks and their scores (module docstring).

    Painted from the boxes (:func:`aggregate_boxes`) when a mask unites at most
    :data:`~transforms.masks.MAX_BOX_MEMBERS` tubes; else the masks are rasterised
    ``batch_size`` at a time and aggregated batch by batch (:func:`aggregate`).

    Args:
        scores: (N,) scores f_i of the masks.
        boxes: int (N, T, 4) tube boxes.
        partners: int64 (N, K).
        shape: (T, H, W).
        base_score: f(V).
        aggregation: see :data:`AGGREGATIONS`.
        batch_size: masks rasterised at once (dense path only).

    Returns:
        float32 (T, H, W) on ``boxes``' device.
    """
    if boxable(partners):
        return aggregate_boxes(scores, boxes, partners, shape, base_score, aggregation)
    pairs = zip(tube_mask_batches(boxes, partners, shape[1:], batch_size),
                scores.float().split(batch_size), strict=True)
    return aggregate(pairs, boxes.shape[0], shape, base_score, aggregation, boxes.device)


def occlusion_scores(engine: PerturbationEngine, boxes: torch.Tensor, partners: torch.Tensor,
                     fill: torch.Tensor | float, keep: float = 1.0) -> torch.Tensor:
    """Scores of N box masks: each rasterised once, ``batch_size`` at a time, for its
    forward through the engine (N forwards).

    Args:
        boxes: int (N, T, 4) tube boxes on the engine's device.
        partners: int64 (N, K).
        fill: what occluded voxels take.
        keep: 1: exact; below 1 approximate incremental inference
            (:meth:`~transforms.perturbation.PerturbationEngine.score`).

    Returns:
        float32 (N,) on the engine's device.
    """
    masks = tube_mask_batches(boxes, partners, engine.frame_shape[1:], engine.batch_size)
    scores = [s for _, s in engine.perturb(masks, fill, keep=keep)]
    return torch.cat(scores) if scores else torch.zeros(0, device=engine.device)


class TubeMethod(Method):
    """The tube methods' one body: masks → scores → map (module docstring).

    A variant overrides :meth:`mask_set` (which masks: AOSA-T's windows) and / or
    :meth:`mask_scores` (how they are scored: AOSA-approx's estimates); ``integrate`` False
    gives the ``_sgl`` variants (single tube masks, no partners).
    """

    needs_tubes = True
    integrate = True

    def mask_set(self, tubes: Tubes, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """The masks to score: boxes int (N, T, 4) and partners int64 (N, K), K = 0 for single
        masks. Here the clip's tubes, integrated unless ``integrate`` is False."""
        if not self.integrate:
            tubes = tubes.without_integration()
        return tubes.boxes, tubes.partners

    def mask_scores(self, engine: PerturbationEngine, boxes: torch.Tensor,
                    partners: torch.Tensor) -> torch.Tensor:
        """(N,) scores of the masks on the engine's device; here exact occlusion with this
        method's fill (:func:`occlusion_scores`)."""
        return occlusion_scores(engine, boxes, partners, self.fill(engine),
                                self.options.incremental_keep)

    def explain(self, engine: PerturbationEngine, tubes: Tubes | None) -> Explanation:
        if tubes is None:
            raise ValueError(f"{self.name} needs tube masks")
        num_frames = engine.frame_shape[0]
        if tubes.boxes.shape[1] != num_frames:
            raise ValueError(f"{self.name}: the tubes have {tubes.boxes.shape[1]} frames, the "
                             f"clip {num_frames}")
        boxes_np, partners_np = self.mask_set(tubes, num_frames)
        boxes = torch.from_numpy(boxes_np).to(engine.device)
        partners = torch.from_numpy(partners_np).to(engine.device)
        scores = self.mask_scores(engine, boxes, partners)
        sal = mask_map(scores, boxes, partners, engine.frame_shape, engine.base_score,
                       self.options.aggregation, engine.batch_size)
        return Explanation(sal.cpu())


@register_method("aosa")
class AOSA(TubeMethod):
    """Integrated tube masks (each mask with its K most co-occurring partners)."""

    name = "aosa"
    integrate = True
    reads = (STRIDE, BOX_SIZE, TOPK, AGGREGATION, FILL, SCORE, INCREMENTAL_KEEP)


@register_method("aosa_sgl")
class AOSASingle(TubeMethod):
    """Single tube masks (AOSA_SGL in the paper's tables)."""

    name = "aosa_sgl"
    integrate = False
    reads = (STRIDE, BOX_SIZE, AGGREGATION, FILL, SCORE,  # no partners: no --topk
             INCREMENTAL_KEEP)
