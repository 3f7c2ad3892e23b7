"""Farneback optical flow between consecutive frames (paper §3.1).

Parameters default to the AOSA reference code's: pyr_scale 0.5, levels 3, winsize 15,
iterations 3, poly_n 5, poly_sigma 1.2, flags 0. Frames are RGB, so they are converted with
``COLOR_RGB2GRAY`` (the reference code converts RGB frames with BGR2GRAY, swapping the channel
weights; we do not copy that).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FlowParams:
    """OpenCV ``calcOpticalFlowFarneback`` parameters."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    flags: int = 0


def farneback_flow(frames: np.ndarray, params: FlowParams | None = None) -> np.ndarray:
    """Dense flow from each frame to the next.

    Args:
        frames: uint8 (T, H, W, 3) RGB, T >= 2.
        params: Farneback parameters.

    Returns:
        float32 (T-1, H, W, 2): ``flow[t, y, x] = (dx, dy)`` such that the content at (x, y)
        in frame t is at (x + dx, y + dy) in frame t+1.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"flow needs (T>=2, H, W, 3) frames, got shape {frames.shape}")
    params = params or FlowParams()
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    out = np.empty((len(gray) - 1, *gray[0].shape, 2), dtype=np.float32)
    for t in range(len(gray) - 1):
        out[t] = cv2.calcOpticalFlowFarneback(
            gray[t], gray[t + 1], None, params.pyr_scale, params.levels, params.winsize,
            params.iterations, params.poly_n, params.poly_sigma, params.flags)
    return out


# --- Beam wrapper ---

from transforms.deadletter import DeadLetterFn  # noqa: E402
from transforms.records import ClipData, ClipFlow  # noqa: E402


class FlowFn(DeadLetterFn):
    """ClipData → ClipFlow (Farneback flow between consecutive frames)."""

    stage = "flow"

    def __init__(self, params: FlowParams | None = None):
        self.params = params or FlowParams()

    def apply(self, clip: ClipData):
        yield ClipFlow(clip, farneback_flow(clip.frames, self.params))
