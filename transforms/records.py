"""The stage contract: the typed elements that flow between the pipeline's stages.

    ClipRef → ClipData → ClipFlow → ClipTubes → ClipResult   (and ErrorRecord from any stage)

Every element carries its clip's :class:`ClipRef` (and so its ``clip_id``). Heavy arrays stay
``uint8`` (frames) or compact (tubes) between stages; maps are float32 only in a ClipResult.
The sink (:mod:`transforms.sink`) turns ClipResults and ErrorRecords into Parquet rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


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
        frame_range: ``(start, end)`` video frame indices (end exclusive) where the explained
            class's evidence is (the temporal ground truth), or None.
        methods: the methods still missing for this clip in ``--output`` (an incremental run
            that finds some of them done), or None: every requested method.
    """

    clip_id: str
    video: str
    start_frame: int = 0
    label: int | None = None
    boxes: tuple | None = None
    frame_range: tuple[int, int] | None = None
    methods: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ClipData:
    """A decoded clip.

    Attributes:
        frames: uint8 (T, H, W, 3) RGB in model-input pixels.
        boxes: per clip frame ``[x0, y0, x1, y1]`` (model-input pixels) or None; None if the
            clip is not annotated.
        frame_range: ``(start, end)`` in *clip* frames (end exclusive) of the temporal ground
            truth, or None (not annotated, or no clip frame inside the video range).
    """

    ref: ClipRef
    frames: np.ndarray
    boxes: tuple | None = None
    frame_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class ClipFlow:
    """A decoded clip and its optical flow, float32 (T-1, H, W, 2)."""

    clip: ClipData
    flow: np.ndarray


@dataclass(frozen=True)
class Tubes:
    """Compact AOSA masks of one clip.

    Attributes:
        tracks: float32 (N, T, 2) anchor positions (x, y); after a frame-out, frozen at the
            first position off screen.
        valid: bool (N, T), False from the frame where the anchor left the frame.
        boxes: int32 (N, T, 4) occluded box ``[x0, y0, x1, y1)`` clipped to the frame; an empty
            box (x0 == x1) where the tube does not occlude.
        partners: int64 (N, K) indices of the K most co-occurring other tubes (K may be 0).
        frame_size: (H, W).
    """

    tracks: np.ndarray
    valid: np.ndarray
    boxes: np.ndarray
    partners: np.ndarray
    frame_size: tuple[int, int]

    @property
    def num_masks(self) -> int:
        return int(self.tracks.shape[0])

    def without_integration(self) -> Tubes:
        """The same tubes with no partners (AOSA_SGL: single masks)."""
        return Tubes(self.tracks, self.valid, self.boxes,
                     np.zeros((self.num_masks, 0), dtype=np.int64), self.frame_size)


@dataclass(frozen=True)
class ClipTubes:
    """A decoded clip and its tube masks."""

    clip: ClipData
    tubes: Tubes


@dataclass(frozen=True)
class MapMetrics:
    """Faithfulness and localisation of one map (docs/USER_GUIDE.md: the ``metrics/`` columns).

    Attributes:
        deletion_curve, insertion_curve: ``metric_steps + 1`` scores each.
        spt_hits, spt_frames, spt_rate: pointing game; None when the clip has no boxes
            (``spt_rate`` also None when no frame has a box).
        tpt_hit, t_mass_in_range, t_above_median_share: temporal pointing (the frame with the
            most positive saliency mass lies in the true range), the share of positive mass in
            the range, and the share of the above-median mass in it; None without a range.
        forward_passes: network forwards the metrics spent (the clean clip's score is shared).
    """

    deletion_auc: float
    insertion_auc: float
    deletion_curve: tuple[float, ...]
    insertion_curve: tuple[float, ...]
    forward_passes: int
    seconds: float
    spt_hits: int | None = None
    spt_frames: int | None = None
    spt_rate: float | None = None
    tpt_hit: bool | None = None
    t_mass_in_range: float | None = None
    t_above_median_share: float | None = None


@dataclass(frozen=True)
class MethodResult:
    """One method's map and what it cost.

    Attributes:
        saliency: float32 (T, H, W) in model-input pixels.
        forward_passes: forwards the method used, counting the clean clip's forward it shares.
        backward_passes: backward passes.
        metrics: None when metrics are off.
        warnings: the method's one-line warnings about this map (:class:`Explanation`).
    """

    method: str
    saliency: np.ndarray
    forward_passes: int
    backward_passes: int
    seconds: float
    metrics: MapMetrics | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassScore:
    """A class index, its name and its probability on the clean clip."""

    index: int
    name: str
    prob: float


@dataclass(frozen=True)
class ClipResult:
    """Everything the scoring stage learned about one clip: the sink's only input.

    A ClipResult exists only when every requested method succeeded on the clip (all-or-nothing:
    a clip never has some rows and an error row).

    Attributes:
        num_frames: T of the explained clip (its maps are (T, H, W)).
        predicted: the network's top class on the clean clip.
        target: the explained class; ``target_source`` is predicted / label / fixed.
        label: the manifest's label with its probability, or None.
        top5: the five most probable classes.
        frame_range: the temporal ground truth in clip frames (end exclusive), or None.
    """

    ref: ClipRef
    num_frames: int
    predicted: ClassScore
    target: ClassScore
    target_source: str
    label: ClassScore | None
    top5: tuple[ClassScore, ...]
    methods: tuple[MethodResult, ...]
    frame_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class ErrorRecord:
    """A dead letter: which clip failed, in which stage, and why."""

    clip_id: str
    video: str
    stage: str
    error_type: str
    message: str
    start_frame: int = 0

    @classmethod
    def of(cls, clip_id: str, video: str, stage: str, exc: BaseException,
           start_frame: int = 0) -> ErrorRecord:
        return cls(clip_id, video, stage, type(exc).__name__, str(exc) or repr(exc),
                   start_frame)


def clip_ref(element: object) -> ClipRef:
    """The ClipRef inside any stage element."""
    while not isinstance(element, ClipRef):
        if isinstance(element, (ClipFlow, ClipTubes)):
            element = element.clip
        elif isinstance(element, (ClipData, ClipResult)):
            element = element.ref
        else:
            raise TypeError(f"not a clip record: {type(element).__name__}")
    return element
