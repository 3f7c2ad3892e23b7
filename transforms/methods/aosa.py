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
    ``mean`` (rank correlation 0.5–0.97 on small clips), which changes deletion / insertion.

``mean`` (default) — the importance of Eq. 5, f(V) − f(Ω̂_i ⊙ V), averaged over the masks that
    occlude each voxel:  S(x) = Σ_i (f(V) − f_i)(1 − Ω̂_i(x)) / Σ_i (1 − Ω̂_i(x)), 0 where no
    mask occludes x. Without the coverage division this is Eq. 2 with f replaced by
    f − f(V) (what the reference code does) up to sign and a per-clip constant; the division
    removes the coverage bias, as captum's Occlusion averages overlapping windows. The map is
    in probability units, the same as AOSA-approx's Eq. 5 estimates.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from transforms.masks import (
    MAX_BOX_MEMBERS,
    mask_members,
    occlusion_masks,
    paint_union_boxes,
    union_box_areas,
)
from transforms.methods.base import FILL, SCORE, Explanation, Method, register_method
from transforms.options import Option
from transforms.perturbation import (
    PerturbationEngine,
    ScoreFn,
    mean_drop_map,
    perturbed_scores,
)
from transforms.tubes import BOX_SIZE, STRIDE, TOPK, Tubes

AGGREGATION = Option(
    "aggregation", str, "mean", choices=("mean", "paper", "reference"),
    help="AOSA map: mean (score drop averaged over covering masks) | paper (Eq. 2) | reference "
         "(the authors' code)")
AGGREGATIONS = AGGREGATION.choices

BOX_CHUNK = 1024
"""Masks handled at once by the box sums (bounds their temporaries: ~1 MB per 1024 masks, T = 16,
K = 3)."""


def tube_mask_batches(boxes: torch.Tensor, partners: torch.Tensor,
                      frame_size: tuple[int, int], batch_size: int) -> Iterator[torch.Tensor]:
    """The N integrated tube masks, rasterised ``batch_size`` at a time on ``boxes``' device.

    Args:
        boxes: int (N, T, 4) tube boxes.
        partners: int64 (N, K) (K = 0: single masks).

    Yields:
        bool (B, T, H, W), True where occluded; mask i is tube i united with its partners.
    """
    n = boxes.shape[0]
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n), device=boxes.device)
        yield occlusion_masks(boxes, mask_members(idx, partners), frame_size)


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


def aosa_saliency(x: torch.Tensor, boxes: torch.Tensor, partners: torch.Tensor,
                  score_fn: ScoreFn, batch_size: int, base_score: float,
                  aggregation: str = "mean", fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Score all N integrated masks, rasterised ``batch_size`` at a time, and aggregate.

    Args:
        x: normalised clip (3, T, H, W) on the device.
        boxes: int (N, T, 4) tube boxes on the device.
        partners: int64 (N, K) on the device (K = 0: single masks).
        score_fn: ``(B, 3, T, H, W) -> (B,)`` target scores.
        batch_size: masks scored per forward batch.
        base_score: f(V), the unoccluded clip's score (used by ``mean``).
        aggregation: ``mean`` or ``paper`` (module docstring).
        fill: what occluded voxels take (0: the dataset-mean colour).

    Returns:
        float32 (T, H, W) on the device.
    """
    masks = tube_mask_batches(boxes, partners, (x.shape[2], x.shape[3]), batch_size)
    return aggregate(perturbed_scores(x, fill, masks, score_fn), boxes.shape[0],
                     tuple(x.shape[1:]), base_score, aggregation, x.device)


class TubeMethod(Method):
    """Base of the methods that occlude AOSA's tube masks (integrated unless ``integrate`` is
    False: the ``_sgl`` variants)."""

    needs_tubes = True
    integrate = True

    def tube_tensors(self, engine: PerturbationEngine, tubes: Tubes | None
                     ) -> tuple[Tubes, torch.Tensor, torch.Tensor]:
        """(tubes, boxes int (N, T, 4), partners int64 (N, K)) on the engine's device; K = 0
        for single masks."""
        if tubes is None:
            raise ValueError(f"{self.name} needs tube masks")
        if not self.integrate:
            tubes = tubes.without_integration()
        return (tubes, torch.from_numpy(tubes.boxes).to(engine.device),
                torch.from_numpy(tubes.partners).to(engine.device))


def occlusion_map(engine: PerturbationEngine, boxes: torch.Tensor, partners: torch.Tensor,
                  fill: torch.Tensor | float, aggregation: str) -> torch.Tensor:
    """Exact occlusion of N box masks through the engine, and their map.

    Each mask is rasterised once, ``batch_size`` at a time, for its forward; the map is then
    painted from the boxes and the N scores (:func:`aggregate_boxes`), so no batch is
    aggregated densely. Masks of more than :data:`~transforms.masks.MAX_BOX_MEMBERS` tubes are
    aggregated batch by batch (:func:`aggregate`).

    Args:
        boxes: int (N, T, 4) tube boxes on the engine's device.
        partners: int64 (N, K).
        fill: what occluded voxels take.
        aggregation: see :data:`AGGREGATIONS`.

    Returns:
        float32 (T, H, W) on the engine's device.
    """
    n, shape = boxes.shape[0], engine.frame_shape
    masks = tube_mask_batches(boxes, partners, shape[1:], engine.batch_size)
    pairs = engine.perturb(masks, fill)
    if partners.shape[1] + 1 > MAX_BOX_MEMBERS:
        return aggregate(pairs, n, shape, engine.base_score, aggregation, engine.device)
    scores = [s for _, s in pairs]
    scores = torch.cat(scores) if scores else torch.zeros(0, device=engine.device)
    return aggregate_boxes(scores, boxes, partners, shape, engine.base_score, aggregation)


class _TubeOcclusion(TubeMethod):
    def explain(self, engine: PerturbationEngine, tubes: Tubes | None) -> Explanation:
        _, boxes, partners = self.tube_tensors(engine, tubes)
        sal = occlusion_map(engine, boxes, partners, self.fill(engine),
                            self.options.aggregation)
        return Explanation(sal.cpu())


@register_method("aosa")
class AOSA(_TubeOcclusion):
    """Integrated tube masks (each mask with its K most co-occurring partners)."""

    name = "aosa"
    integrate = True
    reads = (STRIDE, BOX_SIZE, TOPK, AGGREGATION, FILL, SCORE)


@register_method("aosa_sgl")
class AOSASingle(_TubeOcclusion):
    """Single tube masks (AOSA_SGL in the paper's tables)."""

    name = "aosa_sgl"
    integrate = False
    reads = (STRIDE, BOX_SIZE, AGGREGATION, FILL, SCORE)  # no partners: no --topk
