"""AOSA-approx (paper §3.4–3.5): AOSA's tube masks scored by a first-order Taylor estimate.

``aosa_approx`` uses the integrated masks, ``aosa_sgl_approx`` the single ones (AOSA_SGL-approx).
Both use the same masks as exact AOSA (:mod:`transforms.methods.aosa`) and turn the estimated
scores into a map with exact AOSA's aggregation (``--aggregation``), so the two maps are
comparable voxel for voxel. The masks are never rasterised for that: every mask is, per frame,
a union of K + 1 boxes, so its masked sum and its share of the map are read from / painted into
summed-area tables by inclusion–exclusion (:func:`box_mask_sums`,
:func:`~transforms.methods.aosa.aggregate_boxes`;
O(N · T · 2^(K+1)) instead of O(N · T · H · W)); only the adjustment's (at most 2) expansion
points are dense. With more than :data:`~transforms.masks.MAX_BOX_MEMBERS` tubes per mask the
masks are rasterised ``batch_size`` at a time, as exact AOSA does. Whatever N is, the network
runs per clip (besides the engine's clean forward, and at most 2 more of each with the
adjustment): at the input max(1, K) forwards and backwards (K = ``--approx-steps``, by default
1); in the layer (the default) 2 forwards for the activations and max(1, K) forwards and
backwards that stop at the layer.

Steps:

1. **Fill** (§3.4, conditional sampling). By Eq. 7 only the expectation μ of the sampling
   distribution reaches a first-order estimate, so no value is ever sampled: occluded voxels take
   μ. By default (``--fill`` not given: ``default_fill``) μ is the ``local_mean`` fill
   (:func:`transforms.perturbation.local_mean_fill`, each voxel's mean over a
   ``fill_window × fill_window`` patch centred on it in its own frame, 36 px at 112 px). A
   configured fill is used whatever it is, so exact AOSA and AOSA-approx can be compared with the
   same fill (with ``mean`` this is the plain first-order OSA of §3.5.1, Eq. 5).

   *Approximation choice.* The paper's μ is per mask: the mean of the ``h × w`` patches that
   contain the anchor, taken from the region around it (36 × 36 at 112 px), without the occluded
   patch itself. Here μ is per voxel and the same for every mask, which is what lets one
   direction map (step 2) serve all N masks. It differs from the paper in that (a) the window is
   centred on each voxel rather than tied to the anchor, and (b) it does not exclude the
   occluded box, so part of the occluded content (16 × 16 of the 36 × 36 window at 112 px, ~20 %)
   leaks into its own fill. The authors' code differs from both: a 3-D ``n × n × n`` box filter
   (it also averages over frames; window 4) with zero padding (borders darken). A per-frame,
   border-clipped window is kept here because it is the fill exact AOSA is run with.

2. **Taylor estimate** (Eq. 3–7), *in the clip's voxels* (``--approx-at input``, the
   paper's; the default is the same expansion in a layer, below). One gradient g = ∂f/∂V
   (1 forward + 1 backward through
   ``engine.score_with_grad``; f is the engine's score, by default the softmax probability, as
   the paper and the authors' code), in the paper at the clean clip, by default here half-way
   to the fill (below). With V̂_i = where(m_i, μ, V)::

       f(V̂_i) ≈ f(V) + g · (V̂_i − V) = f(V) + Σ_{t,y,x} d · m_i,   d = Σ_c g ⊙ (μ − V),

   so d (T, H, W) is computed once and each mask costs one masked sum (2^(K+1) − 1 signed box
   sums per frame from d's summed-area table, :func:`box_mask_sums`; :func:`taylor_changes` is
   the same sum over dense masks); no forward pass per mask.

   *Where the gradient is taken* (``--approx-steps`` K, :func:`path_gradient`). K = 0 is the
   paper's Eq. 3, g at V. K ≥ 1 replaces g by the mean of the gradients at V + a (μ − V) for the
   K midpoints a = (k + ½) / K: d is then the midpoint-rule estimate of the path integral
   ∫₀¹ ∇f(V + a (μ − V)) ⊙ (μ − V) da, whose total is f(μ) − f(V), and a mask's sum is the
   mask's share of that change along the straight path (the Aumann–Shapley value, as integrated
   gradients with baseline μ). It is exact, for every K, when f is a sum of per-voxel quadratics
   (no interaction between voxels: tested): the Taylor term at V uses the slope at the clean
   clip only, the path averages the slope along the way to the fill. Cost: K backwards
   instead of 1 (K = 1, the midpoint alone, costs what the paper's estimate costs).
   **Default K = 1**, a deliberate departure from the paper, chosen on real footage with I3D
   (better insertion at the same cost) and the synthetic split (level): docs/CLAIMS.md.

   *In a layer* (``--approx-at layer``, **the default**; a second departure from the paper,
   chosen on the real-footage benchmark: docs/CLAIMS.md). The same first-order expansion, in
   the coordinates of a hidden layer's activations A (C, t, h, w) instead of the voxels:
   ``--layer``, by default the network's Grad-CAM layer (I3D's ``Mixed_5c``). Occluding mask i
   is modelled at the layer as each cell moving from A(V) towards A(μ), the activations of the
   clip filled with μ everywhere, by the share of the cell's voxels the mask covers::

       f(V̂_i) ≈ f(V) + Σ_cells frac_i ⊙ Σ_c g_A ⊙ (A(μ) − A(V)),   g_A = ∂f/∂A

   so d_A = Σ_c g_A ⊙ (A(μ) − A(V)) (t, h, w) is spread evenly over each cell's voxels
   (:func:`cell_spread`) and every mask is again one masked sum of one direction map; with
   ``--approx-steps`` K ≥ 1, g_A is the mean over the K midpoints of the straight path from
   A(V) to A(μ) (:func:`path_gradient` in the layer's space: the layer's output is replaced
   by each point, :func:`~transforms.methods.layers.gradients_at_layer`), whose total is
   exactly f(μ) − f(V) in the limit. At a layer that is the input itself this is step 2
   above to float precision (tested). What it buys: the network between the input and the layer —
   most of its non-linearity — is run exactly (A(μ) is a forward, not a linearisation); what
   it assumes: that occluding part of the clip changes only the cells over it, in proportion
   to what it covers (exact where the layer's cells see only their own voxels: tested).
   With a global-average-pool and linear head (I3D, R3D) and the logit, f is linear in A and
   the path adds nothing; for the probability the path follows the softmax. Cost: 2 forwards
   for A(V) and A(μ) (one batch) and max(1, K) forwards whose backward stops at the layer —
   about the cost of one input gradient (docs/BENCHMARKS.md). Networks without a 5-D layer:
   ``--approx-at input``.

3. **Derivative adjustment** (§3.5.3; off unless ``--approx-adjust``: docs/METHODS.md says
   why). Tukey fences q1 − 1.5·IQR and q3 + 1.5·IQR on the N
   estimated changes Δ_i = f̂(V̂_i) − f(V) (strictly outside = outlier; quartiles by linear
   interpolation, numpy's default). For each tail with outliers, ONE new gradient is taken at
   V̂_e, the clip occluded (with the same fill μ) by the tail's most extreme mask e (lowest Δ for
   the low tail, highest for the high tail), and every outlier of that tail is re-estimated by
   the first-order expansion around V̂_e::

       f(V̂_i) ≈ f(V̂_e) + g_e · (V̂_i − V̂_e) = f(V̂_e) + Σ d_e · m_i − Σ d_e · m_e,

   with d_e = Σ_c g_e ⊙ (μ − V) (because V̂_i − V̂_e = (m_i − m_e) ⊙ (μ − V)) and f(V̂_e) from
   the same forward. So the extreme mask's estimate is its exact score. Both tails' gradients go
   through one ``score_with_grad`` call when ``batch_size >= 2``. Passes: forwards ≤ 1 (engine's
   clean forward) + 1 + 2, backwards ≤ 3; exactly 1 backward when no estimate is an outlier.

   *Where the paper and the authors' code differ (the paper is followed):*

   - Expansion point: the paper's J_{g(x)} at g(x), the input occluded by the mask, i.e. with the
     conditional fill μ. The authors' code multiplies the clip by the keep-mask (fill 0, the
     dataset-mean colour) for the expansion point even when the estimates use μ. Here V̂_e uses μ.
   - Re-estimate: the paper says "the first order approximation at" the new derivative; it is
     taken literally as Eq. 3 expanded at V̂_e over the whole difference V̂_i − V̂_e. The authors'
     code only adds g_e · m_i ⊙ (μ − V̂_e): it drops the voxels occluded by e but not by i (which
     return to V in V̂_i) and, where the two masks overlap, measures μ against the zero-filled
     expansion point. (One could also read the paper as keeping f(V) as the base and swapping
     only the derivative, f(V) + g_e · (V̂_i − V); that is not a first-order expansion at V̂_e and
     is not done.)
   - Sign: the paper defines the difference as f(x) − f̂(g(x)) yet says its smallest value is the
     tail where the score drops most, which fits Δ = f̂ − f(V) (the authors' code). The fences are
     symmetric, so the outliers are the same; each tail is paired with its own most extreme
     mask either way.

   *Caveat.* The re-expansion around V̂_e is exact at V̂_e but extrapolates far for outliers
   unlike e: the gradient at V̂_e is taken where the softmax is steep, and "un-occluding" e to
   first order can overshoot (estimated probabilities above 1 were seen). On the synthetic
   network the adjustment lowered the rank correlation between the approx and exact maps
   (docs/METHODS.md, AOSA-approx); on networks whose outliers share the extreme mask's region
   (tests) it helps.

4. **Map**: exact AOSA's :func:`~transforms.methods.aosa.mask_map` of the estimates
   f(V) + Δ_i with ``options.aggregation`` and f(V) = ``engine.base_score`` (the same body,
   :class:`~transforms.methods.aosa.TubeMethod`, with :meth:`_TubeTaylor.mask_scores` in place
   of the forwards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from transforms.masks import (
    boxable,
    mask_members,
    summed_area_table,
    tube_mask_batches,
    union_box_sums,
)
from transforms.methods.aosa import AGGREGATION, BOX_CHUNK, TubeMethod
from transforms.methods.base import FILL, SCORE, register_method
from transforms.methods.layers import LAYER, gradients_at_layer, layer_outputs
from transforms.options import Option
from transforms.perturbation import PerturbationEngine, occlude
from transforms.tubes import BOX_SIZE, STRIDE, TOPK

APPROX_ADJUST = Option(
    "approx_adjust", bool, False,
    "AOSA-approx with the paper's derivative adjustment of outlying estimates (§3.5.3; why it "
    "is off by default: docs/METHODS.md)")

APPROX_STEPS = Option(
    "approx_steps", int, 1, check=lambda v, _: None if v >= 0 else f"must be >= 0, got {v}",
    help="AOSA-approx: where the gradient is taken on the straight path from the clip to the "
         "fill (in the space --approx-at says): K >= 1 = averaged over the path's K midpoints "
         "(K gradients; 1: half-way); 0 = at the clean clip (the paper's Eq. 3). Why 1: "
         "docs/CLAIMS.md")

APPROX_AT = Option(
    "approx_at", str, "layer", choices=("layer", "input"),
    help="AOSA-approx: where the first-order expansion is taken: layer = in the activations of "
         "--layer (the network's Grad-CAM layer unless given), input = in the clip's voxels "
         "(the paper's Eq. 3). Why layer: docs/CLAIMS.md")

TUKEY_K = 1.5
"""Fence multiplier of the outlier rule (§3.5.3: 1.5 × IQR)."""

GradFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``grad_fn(batch (B, 3, T, H, W)) -> (scores (B,), grads (B, 3, T, H, W))``."""

MasksOf = Callable[[torch.Tensor], Iterable[torch.Tensor]]
"""``masks_of(indices (M,)) ->`` bool (B, T, H, W) batches of those masks, in that order."""

MaskSums = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
"""``sums(direction (T, H, W), indices (M,) or None for all N) ->`` float64 (M,): Σ direction ⊙ m_i
for those masks, in that order (:func:`box_mask_sums`, or :func:`dense_mask_sums`)."""

# --- Pure functions -------------------------------------------------------------------------


def taylor_direction(grad: torch.Tensor, x: torch.Tensor, fill: torch.Tensor | float
                     ) -> torch.Tensor:
    """d = Σ_c grad ⊙ (fill − x): each voxel's first-order score change when it is occluded.

    Args:
        grad: (3, T, H, W) gradient of the score at some input.
        x: (3, T, H, W) clean clip.
        fill: number or tensor broadcastable to (3, T, H, W).

    Returns:
        float64 (T, H, W).
    """
    fill = torch.as_tensor(fill, dtype=torch.float64, device=x.device)
    return (grad.double() * (fill - x.double())).sum(0)


def cell_spread(values: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """(t, h, w) per-cell values → (T, H, W): each layer cell's value shared equally by the
    voxels it covers, so a mask's sum is Σ_cells value · (the share of the cell in the mask).

    Voxel i of an axis of n belongs to cell ⌊i·m / n⌋ of m (nearest-neighbour upsampling's
    rule); the sum over all voxels equals the sum over the cells.

    Raises:
        ValueError: an axis of the layer is longer than the clip's.
    """
    if values.ndim != 3:
        raise ValueError(f"expected (t, h, w) cell values, got {tuple(values.shape)}")
    index, share = [], []
    for m, n in zip(values.shape, size, strict=True):
        if m > n:
            raise ValueError(f"a layer of {tuple(values.shape)} cells is finer than the clip's "
                             f"{tuple(size)} voxels")
        idx = torch.arange(n, device=values.device) * m // n
        index.append(idx)
        share.append(1.0 / torch.bincount(idx, minlength=m).to(torch.float64)[idx])
    t, h, w = index
    spread = values.double()[t][:, h][:, :, w]
    return spread * share[0].view(-1, 1, 1) * share[1].view(1, -1, 1) * share[2].view(1, 1, -1)


@dataclass(frozen=True)
class Expansion:
    """Where the first-order expansion is taken (module docstring, step 2).

    Attributes:
        start: the clean clip's point: the clip (3, T, H, W), or its activations (C, t, h, w)
            at the layer.
        end: the fill's point: μ (number or tensor broadcastable to ``start``), or the
            activations of the clip filled with μ everywhere.
        grad_at: :data:`GradFn` at points of this space (B, *start.shape): the path.
        grad_of_clips: :data:`GradFn` of whole clips (B, 3, T, H, W), gradients in this space:
            the adjustment's expansion points.
        to_voxels: a direction on ``start``'s grid (t, h, w) → the clip's (T, H, W).
    """

    start: torch.Tensor
    end: torch.Tensor | float
    grad_at: GradFn
    grad_of_clips: GradFn
    to_voxels: Callable[[torch.Tensor], torch.Tensor]

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """float64 (T, H, W): each voxel's share of the first-order change, from a gradient
        at a point of this space."""
        return self.to_voxels(taylor_direction(grad, self.start, self.end))


def input_expansion(x: torch.Tensor, fill: torch.Tensor | float, grad_fn: GradFn) -> Expansion:
    """The paper's expansion in the clip's voxels (Eq. 3): points are clips."""
    return Expansion(x, fill, grad_fn, grad_fn, lambda d: d)


def path_alphas(steps: int) -> tuple[float, ...]:
    """Where :func:`path_gradient` takes its gradients: (0,) for ``steps`` = 0 (the clean
    clip), else the K midpoints (k + ½) / K of [0, 1], k < K."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return (0.0,) if steps == 0 else tuple((k + 0.5) / steps for k in range(steps))


def path_gradient(x: torch.Tensor, fill: torch.Tensor | float, grad_fn: GradFn, steps: int,
                  batch_size: int) -> torch.Tensor:
    """The mean gradient of the score over V + a (μ − V) for a in :func:`path_alphas`.

    With ``steps`` = K ≥ 1, Σ_c ḡ ⊙ (μ − V) is the midpoint-rule estimate of the path integral
    ∫₀¹ ∇f(V + a (μ − V)) · (μ − V) da, whose sum over all voxels is f(μ) − f(V); a mask's sum
    of it is the mask's share of that change along the path (Aumann–Shapley), where ``steps``
    = 0 is the first-order Taylor term at V (the paper's Eq. 3).

    Args:
        x: (3, T, H, W) clean clip; fill: μ, broadcastable to it.
        grad_fn: scores and input gradients of a batch (see :data:`GradFn`).
        steps: K (0: the clean clip only).
        batch_size: most clips per ``grad_fn`` call.

    Returns:
        float32 (3, T, H, W); ``grad_fn`` runs on max(1, K) clips.
    """
    alphas = path_alphas(steps)
    total = torch.zeros_like(x, dtype=torch.float32)
    for start in range(0, len(alphas), batch_size):
        a = torch.tensor(alphas[start:start + batch_size], dtype=x.dtype, device=x.device)
        points = x[None] + a.view(-1, 1, 1, 1, 1) * (fill - x)[None]  # a = 0: the clip itself
        _, grads = grad_fn(points)
        total += grads.float().sum(0)
    return total / len(alphas)


def taylor_changes(direction: torch.Tensor, mask_batches: Iterable[torch.Tensor]
                   ) -> torch.Tensor:
    """Σ direction ⊙ mask for each mask, one batch at a time (Eq. 4 without f(V)).

    Args:
        direction: (T, H, W), e.g. from :func:`taylor_direction`.
        mask_batches: bool (B, T, H, W) batches.

    Returns:
        (N,) in ``direction``'s dtype, N masks in all (empty when there are none).
    """
    out = [torch.einsum("thw,bthw->b", direction, m.to(direction.dtype)) for m in mask_batches]
    if not out:
        return direction.new_zeros(0)
    return torch.cat(out)


def dense_mask_sums(masks_of: MasksOf, n: int) -> MaskSums:
    """:data:`MaskSums` over rasterised masks (:func:`taylor_changes`): the reference of
    :func:`box_mask_sums`, and the path for masks of more than :data:`MAX_BOX_MEMBERS` tubes."""

    def sums(direction: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        if indices is None:
            indices = torch.arange(n, device=direction.device)
        return taylor_changes(direction.double(), masks_of(indices))

    return sums


def box_mask_sums(boxes: torch.Tensor, partners: torch.Tensor) -> MaskSums:
    """:data:`MaskSums` from the tubes' boxes and a summed-area table: no dense mask.

    O(N · T · (2^(K+1) − 1)) table reads per direction map instead of N · T · H · W
    (:func:`transforms.masks.union_box_sums`; exact, overlapping boxes included).

    Args:
        boxes: int (N, T, 4) tube boxes.
        partners: int64 (N, K), K + 1 <= :data:`~transforms.masks.MAX_BOX_MEMBERS`.
    """
    n = boxes.shape[0]

    def sums(direction: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        sat = summed_area_table(direction)
        if indices is None:
            indices = torch.arange(n, device=boxes.device)
        out = [union_box_sums(sat, boxes, mask_members(chunk, partners))
               for chunk in indices.to(boxes.device).split(BOX_CHUNK)]
        return torch.cat(out) if out else sat.new_zeros(0)

    return sums


def tukey_fences(values: torch.Tensor, k: float = TUKEY_K) -> tuple[float, float]:
    """(q1 − k·IQR, q3 + k·IQR), quartiles by linear interpolation (numpy's default).

    Args:
        values: (N,), N >= 1.
    """
    if values.numel() == 0:
        raise ValueError("Tukey fences need at least one value")
    q1, q3 = torch.quantile(values.double(), torch.tensor([0.25, 0.75], dtype=torch.float64,
                                                          device=values.device)).tolist()
    iqr = q3 - q1
    return q1 - k * iqr, q3 + k * iqr


def tukey_outliers(values: torch.Tensor, k: float = TUKEY_K
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Values strictly below the low fence and strictly above the high fence.

    Args:
        values: (N,).

    Returns:
        bool (N,) low_mask, bool (N,) high_mask (both all False when N == 0).
    """
    if values.numel() == 0:
        empty = torch.zeros(0, dtype=torch.bool, device=values.device)
        return empty, empty.clone()
    low, high = tukey_fences(values, k)
    v = values.double()
    return v < low, v > high


def tail_extremes(changes: torch.Tensor, low: torch.Tensor, high: torch.Tensor
                  ) -> list[tuple[torch.Tensor, int]]:
    """Each non-empty tail with its most extreme member.

    Returns:
        ``[(tail indices (M,), index of the tail's extreme)]``: the lowest change for the low
        tail, the highest for the high tail (first index on ties); empty tails are left out.
    """
    tails = []
    for members, pick in ((low, torch.argmin), (high, torch.argmax)):
        if bool(members.any()):
            idx = torch.nonzero(members).flatten()
            tails.append((idx, int(idx[pick(changes[idx])])))
    return tails


def adjust_outliers(scores: torch.Tensor, base_score: float, x: torch.Tensor,
                    fill: torch.Tensor | float, expansion: Expansion, sums: MaskSums,
                    masks_of: MasksOf, batch_size: int, k: float = TUKEY_K) -> torch.Tensor:
    """§3.5.3: re-estimate each Tukey tail around the input occluded by its most extreme mask.

    Args:
        scores: (N,) first-order estimates f̂(V̂_i).
        base_score: f(V).
        x: (3, T, H, W) clean clip.
        fill: the fill μ the estimates use.
        expansion: its ``grad_of_clips`` takes the gradients at the occluded clips (at most
            ``batch_size`` per call), its ``direction`` turns them into voxels.
        sums: masked sums of the masks (see :data:`MaskSums`), for the re-estimates.
        masks_of: the masks of given indices (see :data:`MasksOf`): only the tails' extremes
            are rasterised, for their forwards.
        batch_size: most clips per ``grad_fn`` call.
        k: fence multiplier.

    Returns:
        (N,) scores in ``scores``' dtype; outliers replaced, the rest unchanged.
        ``grad_of_clips`` runs on at most 2 clips in all (none without outliers).
    """
    low, high = tukey_outliers(scores - base_score, k)
    tails = tail_extremes(scores - base_score, low, high)
    if not tails:
        return scores
    extremes = torch.tensor([e for _, e in tails], device=scores.device)
    occ = torch.cat(list(masks_of(extremes)))  # (E <= 2, T, H, W)
    f_e, g_e = [], []
    for start in range(0, len(tails), batch_size):
        f, g = expansion.grad_of_clips(occlude(x, fill, occ[start:start + batch_size]))
        f_e.append(f.detach())
        g_e.append(g.detach())
    f_e, g_e = torch.cat(f_e), torch.cat(g_e)
    out = scores.clone()
    for j, (idx, extreme) in enumerate(tails):
        est = sums(expansion.direction(g_e[j]), idx)  # Σ d_e · m_i for the tail's masks
        at_extreme = est[int(torch.nonzero(idx == extreme)[0, 0])]  # Σ d_e · m_e
        out[idx] = (float(f_e[j]) + est - at_extreme).to(out.dtype)
    return out


def approx_scores(x: torch.Tensor, fill: torch.Tensor | float, expansion: Expansion,
                  sums: MaskSums, masks_of: MasksOf, base_score: float,
                  batch_size: int, adjust: bool = True, k: float = TUKEY_K,
                  steps: int = 1) -> torch.Tensor:
    """Estimates of all N occluded scores from one gradient (at the expansion's start, or the
    path's with ``steps`` >= 1: :func:`path_gradient`), then §3.5.3.

    Args:
        x: (3, T, H, W) clean clip.
        fill: the fill μ (number or tensor broadcastable to x).
        expansion: where the expansion is taken (:func:`input_expansion`, or the layer's).
        sums: masked sums of the N masks (see :data:`MaskSums`).
        masks_of: the masks of given indices, for the adjustment's forwards.
        base_score: f(V), the clean clip's score.
        batch_size: most clips per ``grad_fn`` call.
        adjust: apply the derivative adjustment.
        k: fence multiplier.
        steps: where the gradient is taken (:func:`path_alphas`).

    Returns:
        float64 (N,) estimated scores f̂(V̂_i). The expansion's ``grad_at`` runs on
        max(1, ``steps``) points, its ``grad_of_clips`` on at most 2 clips when ``adjust``.
    """
    grad = path_gradient(expansion.start, expansion.end, expansion.grad_at, steps, batch_size)
    scores = base_score + sums(expansion.direction(grad), None)
    if adjust:
        scores = adjust_outliers(scores, base_score, x, fill, expansion, sums, masks_of,
                                 batch_size, k)
    return scores


# --- Methods --------------------------------------------------------------------------------


def layer_expansion(engine: PerturbationEngine, layer_name: str | None,
                    fill: torch.Tensor | float) -> Expansion:
    """The expansion in the activations A of the layer (module docstring, step 2).

    Start A(V) and end A(μ), the activations of the clip and of the clip filled with μ
    everywhere (2 forwards, no backward); path points replace the layer's output
    (:func:`~transforms.methods.layers.gradients_at_layer`: a forward of the clip and a
    backward to the layer each); the adjustment's occluded clips run forward and back to the
    layer; a direction on the layer's (t, h, w) grid is spread over its cells' voxels
    (:func:`cell_spread`).
    """
    x = engine.x
    filled = torch.as_tensor(fill, dtype=x.dtype, device=x.device).expand_as(x)
    pair = torch.stack([x, filled])
    acts = torch.cat([layer_outputs(engine, layer_name, pair[i:i + engine.batch_size],
                                    grad=False)[1]
                      for i in range(0, 2, engine.batch_size)]).float()

    def grad_at(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gradients_at_layer(engine, layer_name, points)

    def grad_of_clips(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, _, grads = layer_outputs(engine, layer_name, clips)
        return scores, grads.float()

    size = tuple(x.shape[1:])
    return Expansion(acts[0], acts[1], grad_at, grad_of_clips, lambda d: cell_spread(d, size))



class _TubeTaylor(TubeMethod):
    """AOSA's body with the masks scored by :func:`approx_scores` instead of forwards."""

    default_fill = "local_mean"  # conditional sampling (module docstring, step 1)
    without_layer = "--approx-at input"

    def needs_layer(self) -> bool:
        return self.options.approx_at == "layer"

    def mask_scores(self, engine: PerturbationEngine, boxes: torch.Tensor,
                    partners: torch.Tensor) -> torch.Tensor:
        """float64 (N,) first-order estimates (+ §3.5.3's adjustment when ``approx_adjust``)."""
        hw, bs = engine.frame_shape[1:], engine.batch_size

        def masks_of(indices: torch.Tensor) -> Iterator[torch.Tensor]:
            return tube_mask_batches(boxes, partners, hw, bs, indices)

        sums = (box_mask_sums(boxes, partners) if boxable(partners)  # else dense, as exact AOSA
                else dense_mask_sums(masks_of, boxes.shape[0]))
        fill = self.fill(engine)
        if self.options.approx_at == "input":
            expansion = input_expansion(engine.x, fill, engine.score_with_grad)
        else:
            expansion = layer_expansion(
                engine, self.options.layer or engine.scorer.spec.gradcam_layer, fill)
        return approx_scores(engine.x, fill, expansion, sums, masks_of, engine.base_score, bs,
                             adjust=self.options.approx_adjust, steps=self.options.approx_steps)


@register_method("aosa_approx")
class AOSAApprox(_TubeTaylor):
    """AOSA-approx: integrated tube masks, first-order estimates (§3.5.3's derivative adjustment
    with ``--approx-adjust``)."""

    name = "aosa_approx"
    integrate = True
    reads = (STRIDE, BOX_SIZE, TOPK, AGGREGATION, FILL, SCORE, APPROX_ADJUST, APPROX_STEPS,
             APPROX_AT, LAYER)


@register_method("aosa_sgl_approx")
class AOSASingleApprox(_TubeTaylor):
    """AOSA_SGL-approx: single tube masks, first-order estimates (§3.5.3's derivative adjustment
    with ``--approx-adjust``)."""

    name = "aosa_sgl_approx"
    integrate = False
    reads = (STRIDE, BOX_SIZE, AGGREGATION, FILL, SCORE, APPROX_ADJUST, APPROX_STEPS,
             APPROX_AT, LAYER)
