"""AOSA-T and AOSA-T_SGL: AOSA's tubes cut into temporal windows, so the map says *when*.

AOSA's tubes span the whole clip, so a tube's score drop cannot tell which of its frames
mattered: with ``mean`` aggregation every frame a tube occludes gets the same drop, and a network
that needs only the first half of the clip gets a map that is flat in time (about half of its
above-median mass in each half). AOSA-T occludes each tube one temporal window at a time.

For each window ``[a, b)`` of the clip's T frames (windows below):

- the **sub-tube** of tube i is the same flow-tracked tube (the same anchor track and boxes from
  frame 0, §3.1, frame-outs §3.3 included) restricted to the window's frames: its boxes in
  frames outside ``[a, b)`` are empty;
- **co-occurrence** (Eq. 1) is the cosine of the displacement vectors restricted to the window's
  steps ``a → a+1, …, b-2 → b-1`` (2(b − a − 1) numbers), and each sub-tube is **integrated**
  with its K most co-occurring sub-tubes of the same window (K = ``tubes.partners.shape[1]``,
  the ``--topk`` the tubes were built with; ties broken by the distance between the anchors in
  the window's first frame, then by index, as :func:`transforms.tubes.top_k_partners`). A tube
  whose anchor left the frame before the window occludes nothing in it; it is ranked after
  every tube that does (co-occurrence −2, below any cosine) so that it is chosen as a partner
  only when fewer than K others are left. ``aosa_t_sgl`` integrates nothing (single sub-tube masks);
- every (window, tube) mask goes through the perturbation engine, ``batch_size`` at a time
  across windows, with the method's fill, and the N × W scores are aggregated by AOSA's
  :func:`~transforms.methods.aosa.aggregate` (``--aggregation``). With ``mean`` (the default) a
  voxel's value is the mean score drop of the masks that occlude it, so it comes only from the
  windows that contain its frame. ``paper`` / ``reference`` follow their formulas over all
  N × W keep-masks; a keep-mask keeps every frame outside its window, so those maps mix the
  windows' scores in every frame and localise in time far less.

**Windows.** ``window`` frames long, starting every ``hop`` frames from frame 0; when the last
such window ends before T, one more window ``[T − window, T)`` is added so every frame is
covered. ``window ≥ T`` is the whole clip: one window whose partners are the tubes' own, so the
map is exactly AOSA's (``aosa_t_sgl``: AOSA_SGL's), bit for bit.

**Cost.** N masks per window: W = 1 + ceil((T − window) / hop) windows cost N · W + 1 forwards
(AOSA: N + 1). Defaults (``--t-window`` / ``--t-hop`` unset): ``window = ceil(T / 2)``,
``hop = T − window`` — two half-clip windows, 2N + 1 forwards, ≤ 2× AOSA (T = 16: [0, 8) and
[8, 16)). ``hop`` alone defaults to ``window`` (non-overlapping).

The trade-off: the map's time resolution is the window. Evidence that fills a window is
localised; evidence that straddles a window boundary is not: a window that hides part of a
motion already removes the class, so every window touching the evidence gets the full drop.
Overlapping windows do not sharpen this (each drop is spread over all of its window's frames);
shorter windows do, at a higher cost and with shorter displacement vectors for the
co-occurrence. The measurements are in docs/METHODS.md (AOSA-T).
"""

from __future__ import annotations

import math

import numpy as np

from transforms.methods.aosa import AGGREGATION, INCREMENTAL_KEEP, TubeMethod
from transforms.methods.base import FILL, SCORE, register_method
from transforms.options import Option, in_range
from transforms.tubes import (
    BOX_SIZE,
    STRIDE,
    TOPK,
    Tubes,
    cooccurrence,
    displacement_vectors,
    top_k_partners,
)

T_WINDOW = Option("t_window", int, None, check=in_range(1, "num_frames"),
                  help="AOSA-T: temporal window of the tubes in frames (default: the method's)")


def _check_hop(hop: int | None, values: dict) -> str | None:
    if hop is None:
        return None
    if hop < 1:
        return f"must be >= 1, got {hop}"
    window = values["t_window"]
    if window is not None and hop > window:
        return f"{hop} > --t-window {window} would leave frames that no window occludes"
    return None


T_HOP = Option("t_hop", int, None, check=_check_hop,
               help="AOSA-T: hop between windows in frames (default: the method's)")

ABSENT = -2.0  # co-occurrence given to partners that occlude nothing in the window


def default_window(num_frames: int) -> int:
    """The default window length: ceil(T / 2) frames."""
    return max(1, math.ceil(num_frames / 2))


def temporal_windows(num_frames: int, window: int | None = None, hop: int | None = None
                     ) -> list[tuple[int, int]]:
    """The windows ``[a, b)`` of a T-frame clip (module docstring).

    Args:
        num_frames: T >= 1.
        window: frames per window (None: ceil(T / 2)); values >= T give the whole clip.
        hop: frames between window starts (None: ``T − window`` with the default window — two
            windows — else ``window``).

    Returns:
        [(a, b), ...] in increasing order, covering every frame.

    Raises:
        ValueError: ``window`` or ``hop`` < 1, T < 1, or ``hop > window`` for a window shorter
            than the clip (frames between windows would never be occluded).
    """
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    if hop is not None and hop < 1:
        raise ValueError(f"hop must be >= 1 frame, got {hop}")
    if window is None:
        window = default_window(num_frames)
        if hop is None:
            hop = max(1, num_frames - window)
    window = min(window, num_frames)
    hop = window if hop is None else hop
    if hop > window < num_frames:
        raise ValueError(f"hop ({hop}) must be <= window ({window}): frames between windows "
                         "would never be occluded")
    starts = list(range(0, num_frames - window + 1, hop))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [(a, a + window) for a in starts]


def window_boxes(boxes: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Tube boxes (N, T, 4) with the frames outside ``[start, stop)`` emptied (all zeros)."""
    out = np.zeros_like(boxes)
    out[:, start:stop] = boxes[:, start:stop]
    return out


def window_partners(tracks: np.ndarray, valid: np.ndarray, start: int, stop: int, k: int
                    ) -> np.ndarray:
    """The K most co-occurring partners of each sub-tube within ``[start, stop)``.

    Co-occurrence of the displacement vectors over the window's steps; ties by the distance of
    the anchors in frame ``start``, then by index. Tubes that occlude no frame of the window rank
    after all others (module docstring).

    Args:
        tracks: float32 (N, T, 2) anchor positions.
        valid: bool (N, T).
        start, stop: the window, ``stop`` exclusive.
        k: partners per tube.

    Returns:
        int64 (N, k).
    """
    co = cooccurrence(displacement_vectors(tracks[:, start:stop]))
    absent = ~valid[:, start:stop].any(axis=1)
    diagonal = np.eye(len(co), dtype=bool)
    # Below every cosine (>= -1) but above the diagonal's -inf: never the tube itself.
    co[:, absent] = ABSENT
    co[diagonal] = -np.inf
    return top_k_partners(co, tracks[:, start], k)


def windowed_masks(tubes: Tubes, windows: list[tuple[int, int]], integrate: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """All N × W sub-tube masks, compactly: window w's tube i is mask ``w · N + i``.

    Args:
        tubes: the clip's tubes (their K = ``partners.shape[1]``).
        windows: from :func:`temporal_windows`.
        integrate: False for single sub-tubes (K = 0).

    Returns:
        boxes int (N·W, T, 4) and partners int64 (N·W, K) indexing into those boxes. A single
        whole-clip window returns the tubes' own boxes and partners.
    """
    n, num_frames = tubes.boxes.shape[:2]
    k = tubes.partners.shape[1] if integrate else 0
    boxes, partners = [], []
    for w, (a, b) in enumerate(windows):
        if (a, b) == (0, num_frames):  # the whole clip: AOSA's own tubes, exactly
            boxes.append(tubes.boxes)
            part = tubes.partners if integrate else np.zeros((n, 0), dtype=np.int64)
        else:
            boxes.append(window_boxes(tubes.boxes, a, b))
            part = window_partners(tubes.tracks, tubes.valid, a, b, k)
        partners.append(part.astype(np.int64) + w * n)
    return np.concatenate(boxes), np.concatenate(partners)


class _WindowedTubeOcclusion(TubeMethod):
    """AOSA's body with every tube cut into temporal windows (:func:`windowed_masks`)."""

    def windows(self, num_frames: int) -> list[tuple[int, int]]:
        """This method's windows for a T-frame clip (``window`` / ``hop`` options)."""
        return temporal_windows(num_frames, self.options.t_window, self.options.t_hop)

    def mask_set(self, tubes: Tubes, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        return windowed_masks(tubes, self.windows(num_frames), self.integrate)


@register_method("aosa_t")
class AOSAT(_WindowedTubeOcclusion):
    """Integrated sub-tube masks per temporal window (AOSA-T)."""

    name = "aosa_t"
    integrate = True
    default_score = "logit"  # chosen on real footage: docs/CLAIMS.md, "The fill"
    reads = (STRIDE, BOX_SIZE, TOPK, AGGREGATION, FILL, SCORE, T_WINDOW, T_HOP,
             INCREMENTAL_KEEP)


@register_method("aosa_t_sgl")
class AOSATSingle(_WindowedTubeOcclusion):
    """Single sub-tube masks per temporal window (AOSA-T_SGL)."""

    name = "aosa_t_sgl"
    integrate = False
    reads = (STRIDE, BOX_SIZE, AGGREGATION, FILL, SCORE, T_WINDOW, T_HOP, INCREMENTAL_KEEP)
