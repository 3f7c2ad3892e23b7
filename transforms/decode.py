"""Decode a clip with OpenCV: temporal sampling, resize of the short side, centre crop.

The clip stays ``uint8`` RGB until scoring. The spatial transform (scale, then crop offset) is
returned with the frames so that annotations (boxes) can be mapped to the same pixels.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from transforms.remote import NO_OPTIONS, FileSystemsOptions, LocalCopies, local_copy


class ClipError(ValueError):
    """A clip cannot be used; the message names the clip and the reason."""


@dataclass(frozen=True)
class DecodedClip:
    """Frames of one clip in model-input pixels.

    Attributes:
        frames: uint8 (T, size, size, 3), RGB.
        scale: resize factor applied to the source frames.
        offset: (x, y) of the crop's top-left corner in resized pixels.
        source_size: (width, height) of the source video.
        fps: frames per second the container reports (0 when unknown).
        frame_indices: source frame index of each of the T frames.
        frame_count: frames in the video as the container reports them (0: unknown).
    """

    frames: np.ndarray
    scale: float
    offset: tuple[int, int]
    source_size: tuple[int, int]
    fps: float
    frame_indices: tuple[int, ...]
    frame_count: int = 0


def resize_and_crop(frame: np.ndarray, size: int, resize_ratio: float = 1.0
                    ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize so that the short side is ``round(size * resize_ratio)``, then centre-crop.

    Args:
        frame: uint8 (H, W, 3).
        size: side of the square output.
        resize_ratio: short side before cropping, relative to ``size`` (>= 1).

    Returns:
        (uint8 (size, size, 3), scale, (x0, y0) crop offset in resized pixels)
    """
    h, w = frame.shape[:2]
    short = max(size, int(round(size * resize_ratio)))
    scale = short / min(h, w)
    nw, nh = max(size, int(round(w * scale))), max(size, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (nw, nh), interpolation=interp)
    x0, y0 = (nw - size) // 2, (nh - size) // 2
    return resized[y0:y0 + size, x0:x0 + size], scale, (x0, y0)


def sample_indices(start_frame: int, num_frames: int, frame_stride: int) -> list[int]:
    """Source frame indices of a clip: ``start, start + stride, ...`` (``num_frames`` of them)."""
    return [start_frame + k * frame_stride for k in range(num_frames)]


@contextlib.contextmanager
def _capture(path: str, copies: LocalCopies | None = None) -> Iterator[cv2.VideoCapture]:
    """An opened capture of ``path``; a remote URI is copied to a worker-local temporary file
    first (removed when the block ends, or kept in ``copies`` for the next clip of it)."""
    try:
        with (copies.use(path, "video") if copies is not None
              else local_copy(path, "video")) as local:
            if not os.path.exists(local):
                raise ClipError(f"{path}: file does not exist")
            if os.path.getsize(local) == 0:
                raise ClipError(f"{path}: file is empty (0 bytes)")
            cap = cv2.VideoCapture(local)
            try:
                if not cap.isOpened():
                    raise ClipError(f"{path}: OpenCV cannot open it as a video (corrupt or "
                                    "unknown format)")
                yield cap
            finally:
                cap.release()
    except OSError as exc:  # a remote object missing or unreadable (names the path)
        raise ClipError(str(exc)) from exc


def video_frame_count(path: str) -> int:
    """Frames in the video: the container's count, else counted by grabbing every frame.

    Raises:
        ClipError: the file is missing, empty or not a video.
    """
    with _capture(path) as cap:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count > 0:
            return count
        while cap.grab():
            count += 1
        return count


def seek(cap: cv2.VideoCapture, frame: int) -> int:
    """Move ``cap`` to just before ``frame``; returns the index of the next frame ``read``
    returns (``frame`` when the container seeks exactly, else 0: read from the start)."""
    if frame <= 0:
        return 0
    if cap.set(cv2.CAP_PROP_POS_FRAMES, frame) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == frame:
        return frame
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return 0


def decode_clip(
    path: str,
    start_frame: int,
    num_frames: int,
    size: int,
    resize_ratio: float = 1.0,
    frame_stride: int = 1,
    seek_to_start: bool = True,
    copies: LocalCopies | None = None,
) -> DecodedClip:
    """Read ``num_frames`` frames from ``path`` starting at ``start_frame``.

    The decoder seeks to ``start_frame`` (falling back to reading from the start when the
    container cannot seek exactly); frames between the wanted ones are grabbed without being
    converted, and only the clip's ``num_frames`` crops are kept: memory is one clip whatever
    the video's length.

    A remote ``path`` is copied to the worker first; ``copies`` keeps that copy for the
    video's next clip.

    Raises:
        ClipError: the file is missing, empty, not a video, or shorter than needed.
    """
    if start_frame < 0 or num_frames < 1 or frame_stride < 1:
        raise ClipError(f"{path}: bad sampling start={start_frame} frames={num_frames} "
                        f"stride={frame_stride}")
    with _capture(path, copies) as cap:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        wanted = sample_indices(start_frame, num_frames, frame_stride)
        wanted_set, last = set(wanted), wanted[-1]
        frames: list[np.ndarray] = []
        scale, offset, source_size = 1.0, (0, 0), (0, 0)
        index = first = seek(cap, start_frame) if seek_to_start else 0
        while index <= last:
            if index not in wanted_set:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            source_size = (bgr.shape[1], bgr.shape[0])
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            crop, scale, offset = resize_and_crop(rgb, size, resize_ratio)
            frames.append(crop)
            index += 1
    if not frames and index == first == 0:
        raise ClipError(f"{path}: no frame could be decoded (corrupt or not a video)")
    if len(frames) < num_frames:
        raise ClipError(f"{path}: too few frames: needs frames {wanted[0]}..{last} "
                        f"(stride {frame_stride}) but reading stopped at frame {index} (the "
                        "video ends there, or that frame is corrupt)")
    return DecodedClip(np.stack(frames), scale, offset, source_size, fps, tuple(wanted),
                       frame_count)


def map_boxes(
    boxes: Sequence[Sequence[float] | None],
    scale: float,
    offset: tuple[int, int],
) -> list[list[float] | None]:
    """Map per-frame boxes ``[x0, y0, x1, y1]`` from source pixels to crop pixels.

    Boxes are not clipped here (the metric validates and clips them); ``None`` stays ``None``.
    """
    ox, oy = offset
    out: list[list[float] | None] = []
    for box in boxes:
        if box is None:
            out.append(None)
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append([x0 * scale - ox, y0 * scale - oy, x1 * scale - ox, y1 * scale - oy])
    return out


def clip_boxes(
    boxes: Sequence[Sequence[float] | None],
    frame_indices: Sequence[int],
    source_size: tuple[int, int],
    scale: float,
    offset: tuple[int, int],
    size: int,
) -> list[list[float] | None]:
    """The boxes of a clip's frames in model-input pixels.

    ``boxes`` has one entry per *video* frame (source pixels). Each box is validated against the
    source frame; a box that the centre crop cuts away entirely becomes None (not visible).

    Raises:
        ValueError: too few boxes for the clip's frames, or a malformed / outside box.
    """
    from transforms.metrics import validate_boxes  # metrics owns the box rules

    last = max(frame_indices)
    if len(boxes) <= last:
        raise ValueError(f"annotation has {len(boxes)} boxes but the clip uses video frames up "
                         f"to {last}")
    width, height = source_size
    chosen = validate_boxes([boxes[i] for i in frame_indices], (len(frame_indices), height, width))
    out: list[list[float] | None] = []
    for box in map_boxes(chosen, scale, offset):
        if box is not None and (box[2] <= 0 or box[3] <= 0 or box[0] >= size or box[1] >= size):
            box = None
        out.append(box)
    return out


def clip_frame_range(frame_range: tuple[int, int], frame_indices: Sequence[int]
                     ) -> tuple[int, int] | None:
    """A video frame range ``[a, b)`` in clip frames: the clip frames whose video index lies in
    it, as ``[first, last + 1)``; None when none does.

    Args:
        frame_range: (a, b) video frame indices, b exclusive.
        frame_indices: the video frame index of each clip frame (increasing).
    """
    a, b = frame_range
    inside = [k for k, f in enumerate(frame_indices) if a <= f < b]
    return (inside[0], inside[-1] + 1) if inside else None


# --- Beam wrapper ---

from transforms.deadletter import DeadLetterFn  # noqa: E402
from transforms.records import ClipData, ClipRef  # noqa: E402


class DecodeFn(DeadLetterFn):
    """ClipRef → ClipData (frames uint8 in model-input pixels, boxes mapped alongside)."""

    stage = "decode"

    def __init__(self, num_frames: int, size: int, resize_ratio: float, frame_stride: int,
                 threads: int = 0, filesystems: FileSystemsOptions = NO_OPTIONS):
        self.num_frames, self.size = num_frames, size
        self.resize_ratio, self.frame_stride = resize_ratio, frame_stride
        self.threads, self.filesystems = threads, filesystems

    def setup(self):
        self.filesystems.apply()
        if self.threads > 0:  # the worker's thread budget (see RunConfig.thread_budget)
            cv2.setNumThreads(self.threads)
        self.copies = LocalCopies()  # a remote video's clips decode from one copy

    def teardown(self):
        self.copies.close()

    def apply(self, ref: ClipRef):
        clip = decode_clip(ref.video, ref.start_frame, self.num_frames, self.size,
                           self.resize_ratio, self.frame_stride, copies=self.copies)
        boxes = None
        if ref.boxes is not None:
            boxes = tuple(clip_boxes(ref.boxes, clip.frame_indices, clip.source_size,
                                     clip.scale, clip.offset, self.size))
        if ref.frame_range is not None and 0 < clip.frame_count <= ref.frame_range[0]:
            raise ValueError(f"{ref.video}: frame_range [{ref.frame_range[0]}, "
                             f"{ref.frame_range[1]}) starts after the video's last frame (it "
                             f"has {clip.frame_count} frames)")
        frame_range = (None if ref.frame_range is None
                       else clip_frame_range(ref.frame_range, clip.frame_indices))
        yield ClipData(ref, clip.frames, boxes, frame_range)
