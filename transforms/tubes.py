"""Spatio-temporal tube masks (paper §3.1–3.3), kept compact.

A tube is an anchor tracked through the clip by the optical flow; its mask occludes an
``h × w`` box centred on the (rounded) anchor in every frame where the anchor is still on screen.
Masks are never stored densely: a :class:`~transforms.records.Tubes` (a record of the stage
contract, re-exported here) holds per-anchor tracks, per-frame integer boxes and the
co-occurrence partners; :mod:`transforms.masks` rasterises them on the scoring device.

Choices (docs/METHODS.md):
- Anchors at ``s//2, s//2 + s, ...`` on each axis (the reference code's grid, integer pixels
  for odd strides too; N = ceil((H - s//2) / s) · ceil((W - s//2) / s)).
- An anchor advances by the flow sampled at its rounded position (``floor(p + 0.5)``).
- Frame-out: once the rounded anchor leaves the frame the tube stops occluding for the rest of
  the clip (§3.3). Its displacement vector keeps the step that left the frame (the paper stops
  tracking *at* that frame, so p^(t) exists, off screen; the reference code keeps it too) and
  is 0 after it. Zeroing that step as well would drop the last motion of every anchor that
  leaves, so tubes leaving together would look less alike (how many integrated masks that
  changes: docs/METHODS.md, "Tubes").
- Co-occurrence (Eq. 1) is the cosine of the 2(T-1) displacement vectors; a zero vector has
  co-occurrence 0 with everything. Self-similarity is excluded. The K partners are the highest
  co-occurrences; ties (e.g. a static background, all zeros) are broken by the distance between
  the anchors in the first frame, then by index, so that static masks merge with their
  neighbours rather than with the top-left corner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from transforms.deadletter import DeadLetterFn
from transforms.flow import FlowParams, farneback_flow
from transforms.options import Option, in_range
from transforms.records import ClipFlow, ClipTubes, Tubes

STRIDE = Option("stride", int, None, check=in_range(1, "size"),
                help="anchor spacing s in px (default: size/14, i.e. N = 196 as in the paper)",
                resolve=lambda v, c: max(1, c["size"] // 14) if v is None else v)
BOX_SIZE = Option("box_size", int, None, check=in_range(1, "size"),
                  help="occlusion box side h = w in px (default: 2 × stride)",
                  resolve=lambda v, c: 2 * STRIDE.resolve(c["stride"], c) if v is None else v)


def _check_topk(topk: int, values: Mapping[str, Any]) -> str | None:
    n = num_anchors(values["size"], values["size"], values["stride"])
    if 0 <= topk < n:
        return None
    return f"must be in [0, {n - 1}] ({n} masks at stride {values['stride']}), got {topk}"


TOPK = Option("topk", int, 3, "K co-occurring masks integrated with each mask", check=_check_topk)


def anchor_grid(height: int, width: int, stride: int) -> np.ndarray:
    """Anchors every ``stride`` px starting at ``stride // 2`` (the reference code's grid).

    Integer positions for every stride: an odd stride's cell centre ``s / 2`` falls on a half
    pixel, which rounding would move one pixel right / down of the reference's anchor.

    Returns:
        float32 (N, 2) positions (x, y), rows first then columns (row-major order).
    """
    if stride < 1:
        raise ValueError(f"anchor stride must be >= 1, got {stride}")
    xs = np.arange(stride // 2, width, stride, dtype=np.float32)
    ys = np.arange(stride // 2, height, stride, dtype=np.float32)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _round(p: np.ndarray) -> np.ndarray:
    return np.floor(p + 0.5).astype(np.int64)


def track_anchors(flow: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move anchors frame to frame by the flow at their rounded positions.

    Args:
        flow: float32 (T-1, H, W, 2), ``(dx, dy)`` from frame t to t+1.
        anchors: float32 (N, 2) positions (x, y) in the first frame.

    Returns:
        tracks float32 (N, T, 2) and valid bool (N, T).
    """
    steps, height, width = flow.shape[0], flow.shape[1], flow.shape[2]
    n = anchors.shape[0]
    tracks = np.empty((n, steps + 1, 2), dtype=np.float32)
    valid = np.zeros((n, steps + 1), dtype=bool)
    pos = anchors.astype(np.float32).copy()
    alive = _inside(pos, height, width)
    tracks[:, 0], valid[:, 0] = pos, alive
    for t in range(steps):
        r = _round(pos[alive])
        moved = pos.copy()
        moved[alive] += flow[t, r[:, 1], r[:, 0]]
        # The step that leaves the frame is kept (p^(t) exists, off screen: tracking stops
        # *at* that frame, §3.3); the anchor stays there, so later steps are 0.
        pos = np.where(alive[:, None], moved, pos)
        alive = alive & _inside(moved, height, width)
        tracks[:, t + 1], valid[:, t + 1] = pos, alive
    return tracks, valid


def _inside(pos: np.ndarray, height: int, width: int) -> np.ndarray:
    r = _round(pos)
    return (r[:, 0] >= 0) & (r[:, 0] < width) & (r[:, 1] >= 0) & (r[:, 1] < height)


def displacement_vectors(tracks: np.ndarray) -> np.ndarray:
    """Eq. 1's v_i: consecutive anchor displacements, flattened.

    Args:
        tracks: (N, T, 2) positions (frozen after a frame-out, so displacements are 0 there).

    Returns:
        float64 (N, 2(T-1)).
    """
    return np.diff(tracks.astype(np.float64), axis=1).reshape(tracks.shape[0], -1)


def cooccurrence(disp: np.ndarray) -> np.ndarray:
    """Cosine similarity between displacement vectors (Eq. 1), self excluded.

    Args:
        disp: (N, D) displacement vectors.

    Returns:
        float64 (N, N) in [-1, 1]; 0 for any pair involving a zero vector; -inf on the diagonal.
    """
    norm = np.linalg.norm(disp, axis=1)
    unit = np.divide(disp, norm[:, None], out=np.zeros_like(disp), where=norm[:, None] > 0)
    co = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(co, -np.inf)
    return co


def top_k_partners(co: np.ndarray, anchors: np.ndarray, k: int) -> np.ndarray:
    """The K most co-occurring partners of each tube.

    Ties broken by first-frame anchor distance, then by index (see module docstring).

    Args:
        co: (N, N) co-occurrence with -inf on the diagonal.
        anchors: (N, 2) first-frame anchor positions.
        k: partners per tube, 0 <= k < N.

    Returns:
        int64 (N, k).
    """
    n = co.shape[0]
    if not 0 <= k < max(n, 1):
        raise ValueError(f"topk must be in [0, {n - 1}] for {n} masks, got {k}")
    if k == 0:
        return np.zeros((n, 0), dtype=np.int64)
    dist = np.linalg.norm(anchors[:, None, :] - anchors[None, :, :], axis=-1)
    # Round the cosine so that float noise does not override the distance tie-break.
    key_co = np.round(co, 9)
    order = np.lexsort((np.broadcast_to(np.arange(n), (n, n)), dist, -key_co), axis=1)
    return order[:, :k].astype(np.int64)


def tube_boxes(tracks: np.ndarray, valid: np.ndarray, box_hw: tuple[int, int],
               frame_size: tuple[int, int]) -> np.ndarray:
    """Per-frame occluded boxes ``[c - h/2, c + h/2)`` around the rounded anchors, clipped.

    Args:
        tracks: (N, T, 2) positions (x, y).
        valid: (N, T) whether the tube occludes in that frame.
        box_hw: (h, w) of the occlusion box.
        frame_size: (H, W).

    Returns:
        int32 (N, T, 4) ``[x0, y0, x1, y1)``; all zeros where not valid.
    """
    (bh, bw), (height, width) = box_hw, frame_size
    c = _round(tracks)
    x0 = np.clip(c[..., 0] - bw // 2, 0, width)
    y0 = np.clip(c[..., 1] - bh // 2, 0, height)
    x1 = np.clip(c[..., 0] - bw // 2 + bw, 0, width)
    y1 = np.clip(c[..., 1] - bh // 2 + bh, 0, height)
    boxes = np.stack([x0, y0, x1, y1], axis=-1).astype(np.int32)
    boxes[~valid] = 0
    return boxes


def build_tubes(flow: np.ndarray, stride: int, box_hw: tuple[int, int], topk: int) -> Tubes:
    """Anchors → tracks → boxes → co-occurrence partners for one clip.

    Args:
        flow: float32 (T-1, H, W, 2).
        stride: anchor spacing s in pixels.
        box_hw: occlusion box (h, w).
        topk: K partners integrated with each mask (0 = single masks).
    """
    height, width = flow.shape[1], flow.shape[2]
    anchors = anchor_grid(height, width, stride)
    tracks, valid = track_anchors(flow, anchors)
    partners = top_k_partners(cooccurrence(displacement_vectors(tracks)), anchors, topk)
    boxes = tube_boxes(tracks, valid, box_hw, (height, width))
    return Tubes(tracks, valid, boxes, partners, (height, width))


def tubes_from_frames(frames: np.ndarray, stride: int, box_hw: tuple[int, int], topk: int,
                      params: FlowParams | None = None) -> Tubes:
    """Convenience: Farneback flow of uint8 (T, H, W, 3) RGB frames, then :func:`build_tubes`."""
    return build_tubes(farneback_flow(frames, params or FlowParams()), stride, box_hw, topk)


def num_anchors(height: int, width: int, stride: int) -> int:
    """N for a frame size and stride (ceil((side - s//2) / s) per axis)."""
    return (math.ceil((height - stride // 2) / stride)
            * math.ceil((width - stride // 2) / stride))


# --- Beam wrapper ---


class TubesFn(DeadLetterFn):
    """ClipFlow → ClipTubes (the flow is dropped here: tubes are all later stages need)."""

    stage = "tubes"

    def __init__(self, stride: int, box_size: int, topk: int):
        self.stride, self.box_size, self.topk = stride, box_size, topk

    def apply(self, item: ClipFlow):
        tubes = build_tubes(item.flow, self.stride, (self.box_size, self.box_size), self.topk)
        yield ClipTubes(item.clip, tubes)
