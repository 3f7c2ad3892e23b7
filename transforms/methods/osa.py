"""OSA: 3D occlusion sensitivity with a fixed sliding cuboid (the paper's §4.1 baseline).

Zeiler & Fergus's occlusion sensitivity extended from images to clips: a cuboid of
``window = (wt, wh, ww)`` voxels slides over the clip with ``strides = (st, sh, sw)``; each
position is occluded with the fill (``--fill``; default 0 in normalised space, the dataset-mean
colour) and scored by f (``--score``; default the softmax probability of the target class). The
map is the score drop f(V) − f(occluded) averaged over the windows that cover each voxel
(0 where none does; with the default geometry every voxel is covered):

    S(x) = Σ_i (f(V) − f_i) · M_i(x) / Σ_i M_i(x),   M_i the window's occlusion mask.

Windows are rasterised on the engine's device ``batch_size`` at a time (never all of them at
once) and streamed through the perturbation engine, which counts the passes: one per window
plus the shared clean forward.

Choices and where they come from:

From the AOSA paper (Uchiyama et al. 2023: §4.1 experimental setting, §4.5 generation time):
    the cuboid 8 frames × 16 × 16 px, strides 2 frames and 8 px, at 16 × 112 × 112; the score f
    (softmax probability) and the mean-colour fill of exact AOSA. For other input sizes the
    spatial window and strides scale with H and W (``round(16·H/112)``, ``round(8·H/112)``, at
    least 1 px); the temporal window is ``min(8, T)`` and the temporal stride stays 2 frames
    (:func:`osa_geometry`). At 16 × 112 × 112 that is 5 × 13 × 13 = 845 windows, ~4.3× the
    196 masks of AOSA (s = 8), in line with the paper's 4.759 s vs 0.728 s per map.

From captum's ``Occlusion`` (0.9; the paper does not say how windows are placed or combined):
    * corner-aligned grid: along an axis of size S, windows start at 0, s, 2s, …, k·s with
      k = ceil((S − w) / s); the last start is >= S − w, so when (S − w) is not a multiple of s
      the last window is *cut off* at the clip border (smaller than ``window``). Every voxel is
      covered; no window is shifted or dropped. (``edge="inside"`` keeps full windows only,
      starts 0 … floor((S − w) / s)·s, and leaves a border strip uncovered at 0: offered for
      comparison, not used by the method.)
    * overlapping windows are averaged: each voxel gets the mean drop of the windows covering
      it (captum divides the summed drops by the coverage count), which removes the coverage
      bias exactly as AOSA's ``mean`` aggregation does; the map is in score units.
    * a stride may not exceed the window along an axis the window does not span (captum's
      rule: it would leave gaps).
    With ``sliding_window_shapes=(3, wt, wh, ww)``, ``strides=(3, st, sh, sw)``, baselines 0
    and a forward returning the probability vector, captum's attribution (equal on the three
    channels) equals this map to float tolerance (tests/test_osa.py). Following captum makes
    the baseline checkable against an independent implementation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch

from transforms.methods.base import FILL, SCORE, Explanation, Method, register_method
from transforms.options import Option, int_triple
from transforms.perturbation import (
    PerturbationEngine,
    ScoreFn,
    mean_drop_map,
    perturbed_scores,
)
from transforms.tubes import Tubes

Triple = tuple[int, int, int]
Edge = Literal["truncate", "inside"]
EDGES = ("truncate", "inside")

PAPER_FRAME = 112
"""Frame side (px) at which the paper's geometry is given (clips 16 × 112 × 112)."""
PAPER_WINDOW: Triple = (8, 16, 16)
PAPER_STRIDES: Triple = (2, 8, 8)


def _check_geometry(value: Triple | None, values: dict) -> str | None:
    """Both options together must give a valid geometry for the run's clips (size × size)."""
    if value is None:
        return None
    clip = (values["num_frames"], values["size"], values["size"])
    try:
        osa_geometry(clip, values["osa_window"], values["osa_strides"])
    except ValueError as err:
        return f"does not fit {clip[0]} × {clip[1]} × {clip[2]} clips: {err}"
    return None


OSA_WINDOW = Option("osa_window", int_triple, None, check=_check_geometry, hash_default=False,
                    help="OSA: the cuboid T,H,W in frames and px (default: the paper's "
                         "8 x 16 x 16 at 112 px, scaled to the clip)")
OSA_STRIDES = Option("osa_strides", int_triple, None, check=_check_geometry,
                     hash_default=False,
                     help="OSA: the cuboid's strides T,H,W (default: the paper's 2, 8, 8 at "
                          "112 px, scaled to the clip)")


# --- Pure functions -------------------------------------------------------------------------


def osa_geometry(frame_shape: Triple, window: Triple | None = None,
                 strides: Triple | None = None) -> tuple[Triple, Triple]:
    """The occlusion cuboid and its strides for a clip of ``frame_shape`` = (T, H, W).

    Defaults scale the paper's geometry (8 × 16 × 16, strides 2, 8, 8 at 16 × 112 × 112):
    window ``(min(8, T), round(16·H/112), round(16·W/112))``, strides
    ``(2, round(8·H/112), round(8·W/112))``, each clamped to [1, size] (window) and >= 1
    (strides). ``window`` / ``strides`` override the defaults as given (then validated).

    Returns:
        ``(window (wt, wh, ww), strides (st, sh, sw))``.

    Raises:
        ValueError: a non-positive size, a window larger than the clip, a stride < 1, or a
            stride larger than the window along an axis the window does not span.
    """
    if len(frame_shape) != 3 or min(frame_shape) < 1:
        raise ValueError(f"frame_shape must be (T, H, W) with positive sizes, got {frame_shape}")
    t, h, w = (int(v) for v in frame_shape)
    if window is None:
        scaled = (PAPER_WINDOW[0], PAPER_WINDOW[1] * h / PAPER_FRAME,
                  PAPER_WINDOW[2] * w / PAPER_FRAME)
        window = tuple(min(size, max(1, round(v)))  # type: ignore[assignment]
                       for v, size in zip(scaled, (t, h, w), strict=True))
    if strides is None:
        scaled = (PAPER_STRIDES[0], PAPER_STRIDES[1] * h / PAPER_FRAME,
                  PAPER_STRIDES[2] * w / PAPER_FRAME)
        strides = tuple(max(1, round(v)) for v in scaled)  # type: ignore[assignment]
    window = tuple(int(v) for v in window)  # type: ignore[assignment]
    strides = tuple(int(v) for v in strides)  # type: ignore[assignment]
    if len(window) != 3 or len(strides) != 3:
        raise ValueError(f"window and strides must have 3 entries (T, H, W), got {window}, "
                         f"{strides}")
    for axis, size, wv, sv in zip("THW", (t, h, w), window, strides, strict=True):
        if not 1 <= wv <= size:
            raise ValueError(f"window {window} does not fit the clip {frame_shape} on {axis}")
        if sv < 1:
            raise ValueError(f"strides must be >= 1, got {strides}")
        if wv < size and sv > wv:
            raise ValueError(f"stride {sv} larger than the window {wv} on {axis} would leave "
                             f"gaps")
    return window, strides  # type: ignore[return-value]


def window_starts(size: int, window: int, stride: int, edge: Edge = "truncate") -> list[int]:
    """Start indices of the windows along one axis.

    ``truncate`` (captum): 0, s, …, ceil((size − window) / s)·s (the last may be cut off).
    ``inside``: 0, s, …, floor((size − window) / s)·s (every window ends inside the axis).
    """
    if edge not in EDGES:
        raise ValueError(f"unknown edge {edge!r}; use one of {', '.join(EDGES)}")
    span = size - window
    last = math.ceil(span / stride) if edge == "truncate" else span // stride
    return [k * stride for k in range(last + 1)]


def window_boxes(frame_shape: Triple, window: Triple, strides: Triple,
                 edge: Edge = "truncate", device: torch.device | str = "cpu") -> torch.Tensor:
    """Every window of the grid as a half-open box, clipped to the clip.

    Args:
        frame_shape: (T, H, W).
        window, strides: as returned by :func:`osa_geometry`.
        edge: ``truncate`` (captum's grid) or ``inside`` (full windows only).

    Returns:
        int64 (N, 6) ``[t0, y0, x0, t1, y1, x1)`` on ``device``, W fastest then H then T.
    """
    axes = [torch.tensor(window_starts(size, wv, sv, edge), dtype=torch.int64)
            for size, wv, sv in zip(frame_shape, window, strides, strict=True)]
    starts = torch.cartesian_prod(*axes).reshape(-1, 3)  # (N, 3)
    ends = torch.minimum(starts + torch.tensor(window),
                         torch.tensor(frame_shape, dtype=torch.int64))
    return torch.cat([starts, ends], dim=1).to(device)


def window_mask_batches(boxes: torch.Tensor, frame_shape: Triple,
                        batch_size: int) -> Iterator[torch.Tensor]:
    """The windows' occlusion masks, rasterised ``batch_size`` at a time on ``boxes``' device.

    Args:
        boxes: int64 (N, 6) ``[t0, y0, x0, t1, y1, x1)``.
        frame_shape: (T, H, W).
        batch_size: masks per yielded batch (the last may be smaller).

    Yields:
        bool (B, T, H, W), True inside the window.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t, h, w = frame_shape
    ts, ys, xs = (torch.arange(n, device=boxes.device) for n in (t, h, w))
    for start in range(0, boxes.shape[0], batch_size):
        b = boxes[start:start + batch_size]
        in_t = (ts >= b[:, 0, None]) & (ts < b[:, 3, None])  # (B, T)
        in_y = (ys >= b[:, 1, None]) & (ys < b[:, 4, None])  # (B, H)
        in_x = (xs >= b[:, 2, None]) & (xs < b[:, 5, None])  # (B, W)
        yield in_t[:, :, None, None] & in_y[:, None, :, None] & in_x[:, None, None, :]


def osa_saliency(x: torch.Tensor, score_fn: ScoreFn, batch_size: int, base_score: float,
                 window: Triple | None = None, strides: Triple | None = None,
                 fill: torch.Tensor | float = 0.0, edge: Edge = "truncate") -> torch.Tensor:
    """OSA map of one clip (the method's body; passes are counted when ``score_fn`` is an
    engine's :meth:`~transforms.perturbation.PerturbationEngine.score`).

    Args:
        x: normalised clip (3, T, H, W) on the device.
        score_fn: ``(B, 3, T, H, W) -> (B,)`` target scores.
        batch_size: windows scored per forward batch.
        base_score: f(V), the clean clip's score.
        window, strides: overrides of :func:`osa_geometry`'s defaults.
        fill: what occluded voxels take (0: the dataset-mean colour).
        edge: ``truncate`` (captum's grid, default) or ``inside``.

    Returns:
        float32 (T, H, W) on the device.
    """
    shape: Triple = tuple(x.shape[1:])  # type: ignore[assignment]
    window, strides = osa_geometry(shape, window, strides)
    boxes = window_boxes(shape, window, strides, edge, x.device)
    masks = window_mask_batches(boxes, shape, batch_size)
    return mean_drop_map(perturbed_scores(x, fill, masks, score_fn), shape, base_score,
                         x.device)


# --- The method -----------------------------------------------------------------------------


@register_method("osa")
class OSA(Method):
    """3D occlusion sensitivity with the paper's cuboid scaled to the clip (module docstring).

    Costs one forward per window (845 at 16 × 112 × 112) plus the shared clean forward.
    ``--osa-window`` / ``--osa-strides`` replace the paper's cuboid or strides (each as given,
    not scaled); the tube options do not apply.
    """

    name = "osa"
    reads = (FILL, SCORE, OSA_WINDOW, OSA_STRIDES)

    def explain(self, engine: PerturbationEngine, tubes: Tubes | None) -> Explanation:
        # engine.score counts the passes: this is engine.perturb's loop
        sal = osa_saliency(engine.x, engine.score, engine.batch_size, engine.base_score,
                           self.options.osa_window, self.options.osa_strides,
                           fill=self.fill(engine))
        return Explanation(sal.cpu())
