"""Elements that flow between the stages, keyed by ``clip_id``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # records stay importable without the stage modules (no import cycles)
    from transforms.tubes import Tubes


def make_clip_id(video: str, start_frame: int, num_frames: int, frame_stride: int = 1) -> str:
    """Stable id of a clip: 16 hex digits of SHA-1 over URI, start, frame count and stride."""
    text = f"{video}|{start_frame}|{num_frames}|{frame_stride}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ClipRef:
    """One clip to explain (from the clip list).

    Attributes:
        boxes: per-frame ``[x0, y0, x1, y1]`` or None in source-video pixels, one per frame of
            the *video* (indexed by source frame number), or None when not annotated.
    """

    clip_id: str
    video: str
    start_frame: int = 0
    label: int | None = None
    boxes: tuple | None = None


@dataclass(frozen=True)
class ClipData:
    """A decoded clip.

    Attributes:
        frames: uint8 (T, H, W, 3) RGB in model-input pixels.
        boxes: per clip frame ``[x0, y0, x1, y1]`` (model-input pixels) or None; None if the
            clip is not annotated.
    """

    ref: ClipRef
    frames: np.ndarray
    boxes: tuple | None = None


@dataclass(frozen=True)
class ClipFlow:
    """A decoded clip and its optical flow, float32 (T-1, H, W, 2)."""

    clip: ClipData
    flow: np.ndarray


@dataclass(frozen=True)
class ClipTubes:
    """A decoded clip and its tube masks."""

    clip: ClipData
    tubes: Tubes


@dataclass(frozen=True)
class ErrorRecord:
    """A dead letter: which clip failed, in which stage, and why."""

    clip_id: str
    video: str
    stage: str
    error_type: str
    message: str

    def to_row(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def of(cls, clip_id: str, video: str, stage: str, exc: BaseException) -> ErrorRecord:
        return cls(clip_id, video, stage, type(exc).__name__, str(exc) or repr(exc))
