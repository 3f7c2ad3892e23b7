"""The perturbation engine: one clip, a stream of masks, a fill, a score — batched, counted.

Every perturbation method and metric is written against this module:

- AOSA / AOSA_SGL occlude tube masks with a fill and score each occluded clip;
- deletion / insertion replace the top-ranked voxels step by step;
- OSA, AOSA-approx, Grad-CAM, STEP and F-EP use the same scores and the gradient path.

The pure loop is :func:`perturbed_scores`: for each batch of boolean masks (B, T, H, W) it
builds ``where(mask, fill, source)`` on the device (only one batch is ever dense) and scores
it. :class:`PerturbationEngine` binds it to one clip on the scoring device: it runs the clean
clip's forward exactly once (shared by every method and metric of the clip), owns the score
(``prob``: softmax probability of the target, the paper's f; ``logit``: its logit), the fills,
and counts forward and backward passes.

Fills (the value occluded voxels take, in normalised input space):
    ``mean``        0, i.e. the dataset-mean colour (the AOSA reference code's fill);
    ``blur``        the clip blurred in space (Gaussian, ``sigma`` px; RISE's insertion start);
    ``local_mean``  each voxel's mean over a ``window × window`` patch around it in its frame
                    (conditional sampling, AOSA-approx §3.4: the paper's 36 × 36 at 112 px).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from transforms.masks import summed_area_table
from transforms.scoring import Scorer

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""``score_fn(batch (B, 3, T, H, W)) -> (B,)`` target scores."""

SCORES = ("prob", "logit")
FILLS = ("mean", "blur", "local_mean")
ScoreKind = Literal["prob", "logit"]


# --- Pure functions -------------------------------------------------------------------------


def occlude(x: torch.Tensor, fill: torch.Tensor | float, masks: torch.Tensor) -> torch.Tensor:
    """``where(mask, fill, x)`` for a batch of masks.

    Args:
        x: (3, T, H, W) clip.
        fill: number or tensor broadcastable to (3, T, H, W).
        masks: bool (B, T, H, W), True = occluded.

    Returns:
        (B, 3, T, H, W).
    """
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(masks[:, None], fill, x)


def perturbed_scores(source: torch.Tensor, fill: torch.Tensor | float,
                     masks: Iterable[torch.Tensor], score_fn: ScoreFn
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Score ``where(mask, fill, source)`` for each batch of masks, one batch at a time.

    Args:
        source: one normalised clip (3, T, H, W).
        fill: what masked voxels take: a tensor broadcastable to (3, T, H, W) or a number.
        masks: an iterable of bool (B, T, H, W) batches (True = replaced by ``fill``); each
            batch is built by the caller on the device and dropped after scoring.
        score_fn: ``(B, 3, T, H, W) -> (B,)``.

    Yields:
        ``(mask batch, scores (B,) float32)``.
    """
    if source.ndim != 4 or source.shape[0] != 3:
        raise ValueError(f"source must have shape (3, T, H, W), got {tuple(source.shape)}")
    fill = torch.as_tensor(fill, dtype=source.dtype, device=source.device)
    for mask in masks:
        if mask.ndim != 4 or tuple(mask.shape[1:]) != tuple(source.shape[1:]):
            raise ValueError(f"mask batch must be (B, {', '.join(map(str, source.shape[1:]))})"
                             f", got {tuple(mask.shape)}")
        batch = occlude(source, fill, mask)  # (B, 3, T, H, W)
        scores = torch.as_tensor(score_fn(batch)).detach()
        if scores.shape != (mask.shape[0],):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)} for a batch of "
                             f"{mask.shape[0]}")
        yield mask, scores.float()
        del batch


def target_score(logits: torch.Tensor, target: int, kind: str = "prob") -> torch.Tensor:
    """(B, C) logits → (B,) score of class ``target``: softmax probability or logit."""
    if kind == "prob":
        return torch.softmax(logits.float(), dim=1)[:, target]
    if kind == "logit":
        return logits.float()[:, target]
    raise ValueError(f"unknown score {kind!r}; use one of {', '.join(SCORES)}")


def _gaussian_kernel1d(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Normalised 1-D Gaussian truncated at ``ceil(3 * sigma)`` pixels each side."""
    radius = max(1, math.ceil(3.0 * sigma))
    pos = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (pos / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def blur_fill(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur in space only, per frame and channel.

    Separable kernel truncated at ``ceil(3 * sigma)`` px, borders padded by replication (so a
    constant image stays constant); frames are never mixed.

    Args:
        x: ``(..., H, W)`` tensor, e.g. one model input ``(3, T, H, W)``.
        sigma: standard deviation in pixels; 0 returns a copy of ``x``.

    Returns:
        Tensor with the shape, dtype and device of ``x``.
    """
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    if sigma == 0:
        return x.detach().clone()
    h, w = x.shape[-2:]
    with torch.no_grad():
        kernel = _gaussian_kernel1d(sigma, x.device, x.dtype)
        r = kernel.numel() // 2
        planes = x.detach().reshape(-1, 1, h, w)
        planes = F.pad(planes, (r, r, 0, 0), mode="replicate")
        planes = F.conv2d(planes, kernel.view(1, 1, 1, -1))
        planes = F.pad(planes, (0, 0, r, r), mode="replicate")
        planes = F.conv2d(planes, kernel.view(1, 1, -1, 1))
    return planes.reshape(x.shape)


def local_mean_fill(x: torch.Tensor, window: int) -> torch.Tensor:
    """Each voxel's mean over the ``window × window`` patch centred on it, in its own frame.

    Patches are clipped at the frame border (the mean is over the pixels inside). An even
    window spans ``window // 2`` pixels before and ``window // 2 - 1`` after the voxel.
    Computed as box sums of one summed-area table per channel and frame (float64):
    O(T · H · W) whatever the window, instead of a pooling of O(T · H · W · window²).

    Args:
        x: (3, T, H, W) normalised clip.
        window: patch side in pixels (>= 1; 1 returns a copy of ``x``).

    Returns:
        (3, T, H, W).
    """
    if window < 1:
        raise ValueError(f"local-mean window must be >= 1, got {window}")
    if window == 1:
        return x.detach().clone()
    before, after = window // 2, window - 1 - window // 2
    h, w = x.shape[-2:]
    with torch.no_grad():
        sat = summed_area_table(x.detach().reshape(-1, h, w))  # (P, H + 1, W + 1) float64

        def bounds(n: int) -> tuple[torch.Tensor, torch.Tensor]:  # clipped [lo, hi) per cell
            pos = torch.arange(n, device=x.device)
            return (pos - before).clamp(min=0), (pos + after + 1).clamp(max=n)

        (y0, y1), (x0, x1) = bounds(h), bounds(w)
        rows0, rows1 = sat[:, y0], sat[:, y1]  # (P, H, W + 1)
        total = rows1[..., x1] - rows0[..., x1] - rows1[..., x0] + rows0[..., x0]
        count = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).double()  # (H, W)
    return (total / count).reshape(x.shape).to(x.dtype)


def mean_drop_map(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], shape: tuple[int, int, int],
                  base_score: float, device: torch.device | str) -> torch.Tensor:
    """Average score drop of the masks covering each voxel (OSA; AOSA's ``mean``).

    Args:
        pairs: (bool (B, T, H, W) occlusion masks, (B,) scores of the occluded clips).
        shape: (T, H, W).
        base_score: f(V), the clean clip's score.

    Returns:
        float32 (T, H, W) on ``device``: Σ_i (f(V) − f_i) M_i / Σ_i M_i, 0 where no mask
        covers the voxel.
    """
    num = torch.zeros(shape, dtype=torch.float32, device=device)
    den = torch.zeros_like(num)
    for occluded, scores in pairs:
        occ = occluded.float()  # (B, T, H, W)
        num += torch.einsum("b,bthw->thw", base_score - scores.float(), occ)
        den += occ.sum(0)
    return torch.where(den > 0, num / den.clamp(min=1.0), torch.zeros_like(num))


# --- The engine -----------------------------------------------------------------------------


@dataclass
class PassCount:
    """Network passes spent on one clip (clips forwarded / backpropagated)."""

    forward: int = 0
    backward: int = 0

    def copy(self) -> PassCount:
        return PassCount(self.forward, self.backward)


class PerturbationEngine:
    """One clip on the scoring device, ready to be perturbed and scored.

    Args:
        scorer: the network, its preprocessing and device policy.
        x: normalised clip (3, T, H, W) on ``scorer.device``.
        target: class index whose score is measured.
        score: ``prob`` (softmax probability, the paper's f) or ``logit``.
        batch_size: most clips per forward batch (results do not depend on it).
        clean_logits: (C,) logits of ``x`` when the caller already ran the clean forward
            (it is then counted once here and never repeated).
        incremental: score occluded clips by incremental inference (``--incremental``,
            :meth:`Scorer.incremental`): equal scores, fewer FLOPs when the occlusion is a
            small box. Built on the first :meth:`score`; a network torch.fx cannot trace
            scores with full forwards and a logged warning.
    """

    def __init__(self, scorer: Scorer, x: torch.Tensor, target: int, score: str = "prob",
                 batch_size: int = 8, clean_logits: torch.Tensor | None = None,
                 incremental: bool = False) -> None:
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; use one of {', '.join(SCORES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scorer, self.x, self.target = scorer, x, int(target)
        self.score_kind, self.batch_size = score, batch_size
        self.passes = PassCount()
        if clean_logits is None:
            with torch.inference_mode():
                clean_logits = scorer.logits(x.unsqueeze(0))[0]
        self.passes.forward += 1
        self.clean_logits = clean_logits.detach().float()
        num_classes = self.clean_logits.shape[0]
        if not 0 <= self.target < num_classes:
            raise ValueError(f"target class {self.target} is out of range for "
                             f"{num_classes} classes")
        self.base_score = float(target_score(self.clean_logits[None], self.target, score)[0])
        self._fills: dict[tuple, torch.Tensor] = {}
        self.incremental = incremental
        self._logits: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._approximate: dict[float, Callable[[torch.Tensor], torch.Tensor]] = {}

    def use_score(self, kind: str) -> None:
        """Measure ``kind`` from now on (each method of a run measures its own score,
        :meth:`~transforms.methods.base.Method.score_read`); the clean forward is shared."""
        if kind not in SCORES:
            raise ValueError(f"unknown score {kind!r}; use one of {', '.join(SCORES)}")
        self.score_kind = kind
        self.base_score = float(target_score(self.clean_logits[None], self.target, kind)[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(T, H, W) of the clip."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    # Scores ------------------------------------------------------------------------------

    def clean_score(self, kind: str | None = None) -> float:
        """The clean clip's score (``kind`` defaults to the engine's score)."""
        if kind is None or kind == self.score_kind:
            return self.base_score
        return float(target_score(self.clean_logits[None], self.target, kind)[0])

    def score(self, batch: torch.Tensor, kind: str | None = None, keep: float = 1.0
              ) -> torch.Tensor:
        """(B, 3, T, H, W) → (B,) target scores without gradients; counts B forwards.

        Batches larger than ``batch_size`` are split. ``kind`` overrides the engine's score
        (the metrics always measure probabilities, as the paper's deletion / insertion).
        ``keep`` < 1 scores clips that differ from the clean clip by approximate incremental
        inference (:meth:`approximate_logits`); 1 is exact.
        """
        kind = kind or self.score_kind
        out = []
        with torch.inference_mode():
            logits = self._batch_logits() if keep >= 1.0 else self.approximate_logits(keep)
            for start in range(0, batch.shape[0], self.batch_size):
                chunk = batch[start:start + self.batch_size]
                out.append(target_score(logits(chunk), self.target, kind))
                self.passes.forward += chunk.shape[0]
        return torch.cat(out)

    def _batch_logits(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The scorer's logits, or the incremental ones for this clip (built once)."""
        if not self.incremental:
            return self.scorer.logits
        if self._logits is None:
            try:
                self._logits = self.scorer.incremental(self.x)
            except TypeError as err:
                log.warning("--incremental: %s; scoring with full forwards", err)
                self._logits = self.scorer.logits
        return self._logits

    def approximate_logits(self, keep: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """Logits by incremental inference with projective-field thresholding at ``keep`` in
        (0, 1) (:func:`models.incremental.threshold_region`): close to, not equal to, full
        forwards. Built once per ``keep`` for this clip.

        Raises:
            TypeError: the network cannot be traced with torch.fx (an approximation asked for
                is never silently replaced by something else).
        """
        if keep not in self._approximate:
            self._approximate[keep] = self.scorer.incremental(self.x, keep=keep)
        return self._approximate[keep]

    def score_with_grad(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of a batch and their gradients with respect to the input.

        Args:
            batch: (B, 3, T, H, W), B <= ``batch_size`` is the caller's business.

        Returns:
            (scores (B,), gradients (B, 3, T, H, W) float32); counts B forwards and B
            backwards (one backward call for the whole batch).
        """
        inp = batch.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            scores = target_score(self.scorer.logits(inp), self.target, self.score_kind)
            (grad,) = torch.autograd.grad(scores.sum(), inp)
        self.passes.forward += batch.shape[0]
        self.passes.backward += batch.shape[0]
        return scores.detach(), grad.float()

    def count_backward(self, clips: int) -> None:
        """Record backward passes run by a method with its own autograd code (e.g. hooks)."""
        self.passes.backward += clips

    # Fills and perturbation --------------------------------------------------------------

    def fill(self, kind: str = "mean", **params: float) -> torch.Tensor | float:
        """The fill of this clip (module docstring); computed once per kind and parameters.

        Args:
            kind: ``mean`` | ``blur`` (``sigma`` px) | ``local_mean`` (``window`` px).
        """
        if kind == "mean":
            return 0.0
        key = (kind, tuple(sorted(params.items())))
        if key not in self._fills:
            if kind == "blur":
                self._fills[key] = blur_fill(self.x, float(params["sigma"]))
            elif kind == "local_mean":
                self._fills[key] = local_mean_fill(self.x, int(params["window"]))
            else:
                raise ValueError(f"unknown fill {kind!r}; use one of {', '.join(FILLS)}")
        return self._fills[key]

    def perturb(self, masks: Iterable[torch.Tensor], fill: torch.Tensor | float = 0.0,
                source: torch.Tensor | None = None, keep: float = 1.0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Score ``where(mask, fill, source)`` for a stream of mask batches.

        Args:
            masks: bool (B, T, H, W) batches with B <= ``batch_size``, True = take ``fill``.
            fill: a number or (3, T, H, W) tensor (see :meth:`fill`); for insertion pass the
                clip itself as the fill and the start image as ``source``.
            source: the clip the masks are applied to (default: the clean clip).
            keep: < 1: approximate incremental inference (:meth:`score`); only for masks on
                the clean clip.

        Yields:
            ``(mask batch, scores (B,))``.
        """
        if keep < 1.0 and source is not None:
            raise ValueError("approximate incremental scoring needs masks on the clean clip")
        yield from perturbed_scores(self.x if source is None else source, fill, masks,
                                    lambda batch: self.score(batch, keep=keep))
