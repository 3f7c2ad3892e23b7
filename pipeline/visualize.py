"""Pictures a person can look at: frame strips with the saliency map overlaid."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def normalise_map(saliency: np.ndarray) -> np.ndarray:
    """Min-max rescale over the whole clip (T, H, W) to [0, 1] (display only)."""
    lo, hi = float(saliency.min()), float(saliency.max())
    return np.zeros_like(saliency, dtype=np.float32) if hi <= lo else \
        ((saliency - lo) / (hi - lo)).astype(np.float32)


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3) RGB frame blended with a JET-coloured heat map in [0, 1] (H, W)."""
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(frame, 1 - alpha, colour, alpha, 0)


def strip_frames(num_frames: int, count: int = 5) -> list[int]:
    """Evenly spread frame indices including the first and last (1, 5, 9, 13, 16 of 16)."""
    return sorted({int(round(i * (num_frames - 1) / (count - 1))) for i in range(count)})


def frame_strip(frames: np.ndarray, saliency: np.ndarray, title: str = "",
                indices: Sequence[int] | None = None,
                boxes: Sequence[Sequence[float] | None] | None = None) -> np.ndarray:
    """Two rows — frames, frames with saliency — for the chosen frame indices.

    Args:
        frames: uint8 (T, H, W, 3) RGB.
        saliency: (T, H, W).
        title: text drawn above the strip.
        indices: frames to show (default :func:`strip_frames`).
        boxes: optional per-frame ground-truth boxes drawn in green on both rows.

    Returns:
        uint8 (rows, cols, 3) RGB image.
    """
    idx = list(indices) if indices is not None else strip_frames(frames.shape[0])
    heat = normalise_map(saliency)
    top, bottom = [], []
    for t in idx:
        f, o = frames[t].copy(), overlay(frames[t], heat[t])
        if boxes is not None and boxes[t] is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[t])
            for img in (f, o):
                cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
        r, c = np.unravel_index(np.argmax(saliency[t]), saliency[t].shape)
        cv2.drawMarker(o, (int(c), int(r)), (255, 255, 255), cv2.MARKER_CROSS, 8, 1)
        cv2.putText(f, f"t={t + 1}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        top.append(f)
        bottom.append(o)
    grid = np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)
    if title:
        band = np.full((22, grid.shape[1], 3), 255, np.uint8)
        cv2.putText(band, title[:120], (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        grid = np.concatenate([band, grid], 0)
    return grid


def save_png(path: str, image_rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
