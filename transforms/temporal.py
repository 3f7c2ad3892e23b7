"""Temporal pointing: does a saliency map say *when* the evidence is? (pure numpy)

The ground truth is a frame range ``[start, end)`` of the clip (clip frames, end exclusive):
the frames in which the explained class's evidence lies (synthetic clips whose class-defining
motion occupies only those frames; composed clips, STEP's "Cat" protocol). Three numbers per
map, each computed on a map ``(T, H, W)`` of any sign:

``temporal_pointing`` (T-PT)
    Hit when the frame with the largest total *positive* saliency (Σ over the frame of
    max(S, 0)) lies in the range; the first such frame on ties. A map with no positive value
    points nowhere: a miss.
``mass_in_range``
    The share of the map's positive mass Σ max(S, 0) lying in the range's frames; nan when the
    map has no positive value. A map uniform in time scores (end − start) / T.
``above_median_share``
    Among the voxels above the map's median m (over all T·H·W voxels), the share of their
    excess mass Σ (S − m) lying in the range: Σ_range max(S − m, 0) / Σ_all max(S − m, 0); nan
    for a constant map. Unlike ``mass_in_range`` it does not depend on the map's offset (maps
    that are mostly negative or mostly a positive floor), and it ignores the bottom half of the
    voxels. This is the "above-median mass" of the issue: a map flat in time scores
    (end − start) / T (0.5 for half the clip), whatever it shows in space.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike


def _check(saliency: ArrayLike, frame_range: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    s = np.asarray(saliency, dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"saliency must be (T, H, W), got shape {s.shape}")
    start, end = int(frame_range[0]), int(frame_range[1])
    if not 0 <= start < end <= s.shape[0]:
        raise ValueError(f"frame range must satisfy 0 <= start < end <= T = {s.shape[0]}, "
                         f"got [{start}, {end})")
    if not np.all(np.isfinite(s)):
        raise ValueError("saliency has non-finite values")
    return s, start, end


def frame_masses(saliency: ArrayLike) -> np.ndarray:
    """Total positive saliency of each frame: float64 (T,), Σ_{y,x} max(S, 0)."""
    s = np.asarray(saliency, dtype=np.float64)
    return np.clip(s, 0.0, None).reshape(s.shape[0], -1).sum(axis=1)


def temporal_pointing(saliency: ArrayLike, frame_range: tuple[int, int]) -> bool:
    """T-PT: the frame of largest positive mass lies in ``[start, end)`` (module docstring).

    Args:
        saliency: (T, H, W) map.
        frame_range: (start, end) clip frames, end exclusive, 0 <= start < end <= T.

    Returns:
        True for a hit; False for a miss or a map without positive values.
    """
    s, start, end = _check(saliency, frame_range)
    mass = frame_masses(s)
    if not mass.max() > 0:
        return False
    return bool(start <= int(np.argmax(mass)) < end)


def mass_in_range(saliency: ArrayLike, frame_range: tuple[int, int]) -> float:
    """Share of the positive saliency mass inside ``[start, end)``; nan without positive mass.

    Args:
        saliency: (T, H, W) map.
        frame_range: (start, end) clip frames, end exclusive.
    """
    s, start, end = _check(saliency, frame_range)
    mass = frame_masses(s)
    total = mass.sum()
    return float(mass[start:end].sum() / total) if total > 0 else float("nan")


def above_median_share(saliency: ArrayLike, frame_range: tuple[int, int]) -> float:
    """Share of the above-median excess mass Σ max(S − median, 0) inside ``[start, end)``.

    Args:
        saliency: (T, H, W) map.
        frame_range: (start, end) clip frames, end exclusive.

    Returns:
        In [0, 1]; nan when no voxel is above the median (a constant map).
    """
    s, start, end = _check(saliency, frame_range)
    truth = np.zeros(s.shape, dtype=bool)
    truth[start:end] = True
    return above_median_share_in(s, truth)


def above_median_share_in(saliency: ArrayLike, truth: np.ndarray) -> float:
    """Share of a map's above-median excess mass Σ max(S − median, 0) lying in ``truth`` (the
    spatial and spatio-temporal form of :func:`above_median_share`).

    Args:
        saliency: float (T, H, W) map of any sign.
        truth: bool (T, H, W), the voxels of the evidence.

    Returns:
        In [0, 1]; nan for a constant map.
    """
    s = np.asarray(saliency, dtype=np.float64)
    if s.shape != truth.shape:
        raise ValueError(f"map {s.shape} and truth {truth.shape} differ in shape")
    excess = np.clip(s - np.median(s), 0.0, None)
    total = excess.sum()
    return float(excess[truth].sum() / total) if total > 0 else float("nan")
