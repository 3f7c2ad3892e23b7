"""Explanation-quality metrics: deletion / insertion AUC and the spatial pointing game.

Pure numpy / torch functions (no Beam). The protocol follows the AOSA paper, section 4.2:

* Deletion / insertion (RISE): voxels are removed from (deletion) or inserted into (insertion) the
  model input in decreasing order of saliency over ``steps`` equal steps (28 in the paper); the
  score is the softmax probability of the target class and the metric is the area under the
  score curve, with the fraction of perturbed voxels on the horizontal axis.
* Spatial pointing game (S-PT): per frame, a hit when the disk of radius 7 px (at 112 px input)
  around the saliency maximum meets the ground-truth box; the score is hits / frames with a box.

Conventions (docs/DESIGN.md): model input ``(3, T, H, W)`` normalised, saliency ``(T, H, W)`` in
model-input pixels, boxes ``[x0, y0, x1, y1]`` with x = column, y = row, x1 / y1 exclusive.
The deletion fill is 0 in normalised space (the dataset-mean colour), as AOSA's occlusions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np
import torch

from transforms.perturbation import ScoreFn, blur_fill, perturbed_scores

Box = Sequence[float]


# --- Area under a curve --------------------------------------------------------------------------


def auc(y: np.ndarray) -> float:
    """Area under a curve sampled at equally spaced points of [0, 1] (trapezoid rule).

    ``y[i]`` is the value at ``x = i / n`` for ``i = 0..n``, so ``n + 1`` samples describe ``n``
    steps and the result is ``sum((y[i] + y[i + 1]) / 2) / n``. A constant ``c`` gives ``c``;
    ``y = x`` gives 0.5. Exact for curves that are linear between the samples.

    Args:
        y: 1-D array of ``n + 1 >= 2`` values.

    Returns:
        The area as a Python float.

    Raises:
        ValueError: if ``y`` is not 1-D or has fewer than 2 samples.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1 or y.shape[0] < 2:
        raise ValueError(f"auc needs a 1-D curve with at least 2 samples, got shape {y.shape}")
    n = y.shape[0] - 1
    return float((y[:-1] + y[1:]).sum() / (2.0 * n))


# --- Deletion / insertion ------------------------------------------------------------------------


def _saliency_rank(
    saliency: torch.Tensor | np.ndarray, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Rank of every voxel by decreasing saliency (0 = most salient), ties broken by flat index.

    Args:
        saliency: ``(T, H, W)`` map.
        shape: expected ``(T, H, W)``.
        device: device of the returned ranks.

    Returns:
        int64 tensor ``(T, H, W)`` holding a permutation of ``0..T*H*W-1``.
    """
    sal = torch.as_tensor(saliency).detach().to(device=device, dtype=torch.float32)
    if tuple(sal.shape) != tuple(shape):
        raise ValueError(f"saliency has shape {tuple(sal.shape)}, expected {tuple(shape)}")
    if not bool(torch.isfinite(sal).all()):
        raise ValueError("saliency contains non-finite values")
    flat = sal.reshape(-1)
    # A stable descending sort keeps equal values in increasing flat-index order.
    order = torch.sort(flat, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(flat.numel(), device=device)
    return rank.view(shape)


def _step_counts(n_voxels: int, steps: int) -> list[int]:
    """Voxels perturbed at each step: ``round(k * n_voxels / steps)`` (half up), k = 0..steps."""
    return [(2 * k * n_voxels + steps) // (2 * steps) for k in range(steps + 1)]


def perturbation_curve(
    x: torch.Tensor,
    saliency: torch.Tensor | np.ndarray,
    score_fn: ScoreFn,
    mode: Literal["deletion", "insertion"],
    steps: int = 28,
    baseline: torch.Tensor | None = None,
    batch_size: int = 8,
    clean_score: float | None = None,
) -> np.ndarray:
    """Score curve while voxels are deleted from / inserted into ``x`` by decreasing saliency.

    A voxel is one space-time position ``(t, h, w)`` with all 3 channels. Voxels are ranked most
    salient first; equal saliencies keep flat (row-major ``t, h, w``) index order, so the curve is
    deterministic. At step ``k`` (``k = 0..steps``) the top ``round(k * T*H*W / steps)`` voxels
    (half rounded up) are replaced by ``baseline`` (deletion, starting from ``x``) or copied from
    ``x`` into ``baseline`` (insertion, starting from ``baseline``). The perturbed inputs go
    through the perturbation engine's loop (:func:`transforms.perturbation.perturbed_scores`),
    at most ``batch_size`` at a time.

    Args:
        x: one normalised model input ``(3, T, H, W)``.
        saliency: ``(T, H, W)`` map (tensor or array) on the same pixel grid.
        score_fn: ``score_fn(batch (B, 3, T, H, W)) -> (B,)`` target-class scores.
        mode: ``"deletion"`` or ``"insertion"``.
        steps: number of steps; the curve has ``steps + 1`` points.
        baseline: fill, broadcastable to ``(3, T, H, W)``; default zeros (the dataset-mean colour
            in normalised space). :func:`blurred_baseline` gives RISE's blurred insertion start.
        batch_size: largest batch passed to ``score_fn``.
        clean_score: the score of ``x`` itself when already known (the clean forward is shared):
            the point whose input is ``x`` (deletion's first, insertion's last) is then not
            forwarded again.

    Returns:
        float64 array ``(steps + 1,)``: deletion starts at ``score(x)`` and ends at
        ``score(baseline)``; insertion the other way round.

    Raises:
        ValueError: on bad shapes, mode, steps or batch size, or a non-finite saliency.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"x must have shape (3, T, H, W), got {tuple(x.shape)}")
    x = x.detach()
    rank = _saliency_rank(saliency, tuple(x.shape[1:]), x.device)[None]  # (1, T, H, W)
    base = (torch.zeros_like(x) if baseline is None
            else torch.broadcast_to(baseline.detach().to(x.device, x.dtype), x.shape))
    # deletion: the top voxels take the baseline; insertion: the top voxels come from x.
    source, fill = (x, base) if mode == "deletion" else (base, x)
    counts = _step_counts(rank.numel(), steps)
    clean_step = 0 if mode == "deletion" else steps  # the step whose input is x itself
    todo = [k for k in range(steps + 1) if clean_score is None or k != clean_step]

    def mask_batches():
        for start in range(0, len(todo), batch_size):
            chunk = torch.tensor([counts[k] for k in todo[start:start + batch_size]],
                                 device=x.device)
            yield rank < chunk.view(-1, 1, 1, 1)  # (B, T, H, W)

    curve = np.empty(steps + 1, dtype=np.float64)
    if clean_score is not None:
        curve[clean_step] = clean_score
    done = 0
    with torch.no_grad():
        for _, scores in perturbed_scores(source, fill, mask_batches(), score_fn):
            curve[todo[done:done + scores.shape[0]]] = scores.cpu().double().numpy()
            done += scores.shape[0]
    return curve


blurred_baseline = blur_fill  # RISE's insertion start image (see transforms.perturbation)


class DeletionInsertion(TypedDict):
    """Result of :func:`deletion_insertion` (curves are float64 arrays of ``steps + 1``)."""

    deletion_auc: float
    insertion_auc: float
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    forward_passes: int


def deletion_insertion(
    x: torch.Tensor,
    saliency: torch.Tensor | np.ndarray,
    score_fn: ScoreFn,
    steps: int = 28,
    batch_size: int = 8,
    insertion_baseline: torch.Tensor | None = None,
    clean_score: float | None = None,
) -> DeletionInsertion:
    """Deletion and insertion curves and AUCs of one saliency map (paper: 28 steps).

    Deletion fills with zeros (the dataset-mean colour); insertion starts from
    ``insertion_baseline`` (default zeros as well; pass :func:`blurred_baseline` for RISE's
    blurred variant).

    Args:
        x: one normalised model input ``(3, T, H, W)``.
        saliency: ``(T, H, W)`` map.
        score_fn: ``score_fn(batch (B, 3, T, H, W)) -> (B,)`` target-class scores.
        steps: perturbation steps per curve.
        batch_size: largest batch passed to ``score_fn``.
        insertion_baseline: start image of insertion, broadcastable to ``x``.
        clean_score: the score of ``x`` when already known (shared clean forward): then the two
            curve points whose input is ``x`` itself are not forwarded again.

    Returns:
        Dict with ``deletion_auc`` (lower is better), ``insertion_auc`` (higher is better), both
        curves, and ``forward_passes``: model inputs scored, ``2 * (steps + 1)``, or
        ``2 * steps`` with ``clean_score``.
    """
    deletion = perturbation_curve(x, saliency, score_fn, "deletion", steps, None, batch_size,
                                  clean_score)
    insertion = perturbation_curve(
        x, saliency, score_fn, "insertion", steps, insertion_baseline, batch_size, clean_score
    )
    return DeletionInsertion(
        deletion_auc=auc(deletion),
        insertion_auc=auc(insertion),
        deletion_curve=deletion,
        insertion_curve=insertion,
        forward_passes=int(deletion.size + insertion.size) - (0 if clean_score is None else 2),
    )


# --- Spatial pointing game -----------------------------------------------------------------------


@dataclass(frozen=True)
class PointingResult:
    """Spatial pointing game of one clip.

    Attributes:
        hits: frames whose saliency maximum hits the box.
        frames: frames with a box (frames without one are skipped, not misses).
        rate: ``hits / frames``; nan when ``frames == 0``.
        per_frame: per frame True (hit), False (miss) or None (no box).
    """

    hits: int
    frames: int
    rate: float
    per_frame: list[bool | None]


def pointing_radius(size: int, ref_size: int = 112, ref_radius: float = 7.0) -> float:
    """Pointing-game radius for ``size`` px input: the paper's 7 px at 112 px, scaled linearly.

    ``ref_radius * size / ref_size``, e.g. 14 px at 224 px.

    Raises:
        ValueError: if ``size`` or ``ref_size`` is not positive.
    """
    if size <= 0 or ref_size <= 0:
        raise ValueError(f"size and ref_size must be positive, got {size} and {ref_size}")
    return ref_radius * size / ref_size


def _clip_box(box: Box, height: int, width: int, frame: int) -> tuple[float, float, float, float]:
    """Validate one ``[x0, y0, x1, y1]`` box and clip it to ``[0, width] x [0, height]``."""
    if len(box) != 4:
        raise ValueError(f"frame {frame}: box must be [x0, y0, x1, y1], got {list(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"frame {frame}: box {list(box)} has non-finite coordinates")
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"frame {frame}: degenerate box {list(box)} (needs x0 < x1 and y0 < y1)")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(
            f"frame {frame}: box {list(box)} lies entirely outside the {width}x{height} frame"
        )
    return max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))


def validate_boxes(
    boxes: Sequence[Box | None], shape: tuple[int, ...]
) -> list[tuple[float, float, float, float] | None]:
    """Check the box count against ``shape = (T, H, W)`` and validate / clip every box."""
    t, h, w = shape
    if len(boxes) != t:
        raise ValueError(f"annotation has {len(boxes)} boxes for {t} frames")
    return [None if b is None else _clip_box(b, h, w, i) for i, b in enumerate(boxes)]


def _point_hits_box(
    row: int, col: int, box: tuple[float, float, float, float], radius: float
) -> bool:
    """Closed disk around pixel (x=col, y=row) meets the pixel-centre rectangle of a clipped box.

    The box ``[x0, y0, x1, y1)`` covers pixel centres ``[x0, x1 - 1] x [y0, y1 - 1]``; a box
    narrower than one pixel collapses to its left / top edge.
    """
    x0, y0, x1, y1 = box
    hi_x, hi_y = max(x0, x1 - 1.0), max(y0, y1 - 1.0)
    dx = max(x0 - col, 0.0, col - hi_x)
    dy = max(y0 - row, 0.0, row - hi_y)
    return dx * dx + dy * dy <= radius * radius


def pointing_game(
    saliency: np.ndarray, boxes: Sequence[Box | None], radius: float
) -> PointingResult:
    """Spatial pointing game (S-PT): does each frame's saliency maximum point into its box?

    Per frame with a box, the maximum is ``argmax`` over the frame; ties go to the first pixel in
    row-major order (smallest row, then smallest column). Pixel ``(r, c)`` is the point
    ``(x=c, y=r)``. A hit when the closed disk of ``radius`` px around it meets the box rectangle
    ``[x0, x1 - 1] x [y0, y1 - 1]`` of pixel centres (distance <= radius). Boxes partly outside
    the frame are clipped; frames whose box is None are skipped (neither hit nor miss).

    Args:
        saliency: ``(T, H, W)`` map.
        boxes: ``T`` entries ``[x0, y0, x1, y1]`` (saliency pixels, x1 / y1 exclusive) or None.
        radius: disk radius in pixels (see :func:`pointing_radius`).

    Returns:
        :class:`PointingResult`.

    Raises:
        ValueError: wrong box count, a degenerate box (x0 >= x1 or y0 >= y1), a box entirely
            outside the frame, a non-finite saliency, or a negative radius.
    """
    sal = np.asarray(saliency)
    if sal.ndim != 3:
        raise ValueError(f"saliency must have shape (T, H, W), got {sal.shape}")
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be finite and >= 0, got {radius}")
    clipped = validate_boxes(boxes, sal.shape)
    if not np.isfinite(sal).all():
        raise ValueError("saliency contains non-finite values")
    per_frame: list[bool | None] = []
    for frame, box in zip(sal, clipped, strict=True):
        if box is None:
            per_frame.append(None)
            continue
        row, col = divmod(int(np.argmax(frame)), frame.shape[1])
        per_frame.append(_point_hits_box(row, col, box, radius))
    hits = sum(1 for v in per_frame if v)
    frames = sum(1 for v in per_frame if v is not None)
    rate = hits / frames if frames else float("nan")
    return PointingResult(hits=hits, frames=frames, rate=rate, per_frame=per_frame)


# --- Reference maps (baselines for the metrics) --------------------------------------------------


def random_map(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Uniform [0, 1) noise map ``(T, H, W)`` float32, reproducible from ``seed``."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def center_bias_map(shape: tuple[int, int, int]) -> np.ndarray:
    """Centred isotropic Gaussian per frame, ``(T, H, W)`` float32 with peak 1.

    Centre ``((H - 1) / 2, (W - 1) / 2)`` in pixel indices; sigma = ``min(H, W) / 4``.
    """
    t, h, w = shape
    sigma = min(h, w) / 4.0
    ys = (np.arange(h) - (h - 1) / 2.0)[:, None]
    xs = (np.arange(w) - (w - 1) / 2.0)[None, :]
    frame = np.exp(-(ys**2 + xs**2) / (2.0 * sigma**2)).astype(np.float32)
    return np.broadcast_to(frame, (t, h, w)).copy()


def box_oracle_map(shape: tuple[int, int, int], boxes: Sequence[Box | None]) -> np.ndarray:
    """1 on the pixels a frame's box overlaps, 0 elsewhere; frames without a box are all 0.

    Pixel ``c`` spans ``[c, c + 1)``, so a box marks columns ``floor(x0) .. ceil(x1) - 1`` and
    rows ``floor(y0) .. ceil(y1) - 1`` (exactly ``x0 .. x1 - 1`` for integer boxes), clipped.
    Boxes are validated as in :func:`pointing_game`.

    Returns:
        float32 ``(T, H, W)``.
    """
    out = np.zeros(shape, dtype=np.float32)
    for t, box in enumerate(validate_boxes(boxes, tuple(shape))):
        if box is not None:
            x0, y0, x1, y1 = box
            out[t, math.floor(y0) : math.ceil(y1), math.floor(x0) : math.ceil(x1)] = 1.0
    return out


# --- Beam wrapper --------------------------------------------------------------------------------
