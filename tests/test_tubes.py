"""Known-answer tests for flow, tube tracking, co-occurrence, integration and frame-outs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from transforms.flow import farneback_flow
from transforms.tubes import (
    anchor_grid,
    build_tubes,
    cooccurrence,
    displacement_vectors,
    num_anchors,
    top_k_partners,
    track_anchors,
    tube_boxes,
)


def translating_clip(dx: int, dy: int, frames: int = 8, size: int = 64, seed: int = 0
                     ) -> np.ndarray:
    """A smooth random texture moving by (dx, dy) px per frame: uint8 (T, size, size, 3)."""
    rng = np.random.default_rng(seed)
    big = size + 2 * frames * (abs(dx) + abs(dy)) + 32
    tex = rng.integers(0, 256, (big, big, 3), dtype=np.uint8)
    tex = cv2.GaussianBlur(tex, (0, 0), 2.0)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX)
    c = big // 2 - size // 2
    # Content moving by +dx means the window moves by -dx over the texture.
    return np.stack([tex[c - t * dy:c - t * dy + size, c - t * dx:c - t * dx + size]
                     for t in range(frames)])


def constant_flow(frames: int, height: int, width: int, dx: float, dy: float) -> np.ndarray:
    flow = np.zeros((frames - 1, height, width, 2), dtype=np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


def test_anchor_grid_matches_the_reference_layout():
    a = anchor_grid(112, 112, 8)
    assert a.shape == (196, 2)
    xs = np.unique(a[:, 0])
    assert xs[0] == 4 and xs[-1] == 108 and np.all(np.diff(xs) == 8)
    assert tuple(a[1]) == (12.0, 4.0)  # row-major: x varies fastest


def test_odd_strides_put_anchors_on_the_reference_pixels():
    """s // 2 + k·s: for s = 5 the reference's 2, 7, 12, ... (s / 2 = 2.5 would round to 3)."""
    a = anchor_grid(23, 17, 5)
    xs, ys = np.unique(a[:, 0]), np.unique(a[:, 1])
    assert xs.tolist() == [2, 7, 12] and ys.tolist() == [2, 7, 12, 17, 22]
    assert a.shape[0] == num_anchors(23, 17, 5) == 15
    for size, stride in [(112, 8), (64, 4), (24, 6), (50, 7), (33, 3)]:
        assert anchor_grid(size, size, stride).shape[0] == num_anchors(size, size, stride)


@pytest.mark.parametrize("dx,dy", [(2, 1), (-1, 2), (0, 0)])
def test_anchors_follow_a_known_translation(dx, dy):
    frames = translating_clip(dx, dy)
    flow = farneback_flow(frames)
    tracks, valid = track_anchors(flow, anchor_grid(64, 64, 8))
    t = frames.shape[0] - 1
    expected = tracks[:, 0] + np.array([dx * t, dy * t], dtype=np.float32)
    # Interior anchors (away from the borders where Farneback has no support).
    interior = np.all((tracks[:, 0] >= 16) & (tracks[:, 0] <= 48), axis=1)
    assert interior.sum() >= 9
    err = np.abs(tracks[interior, -1] - expected[interior])
    assert err.max() <= 1.0, err.max()
    assert valid[interior].all()


def test_flow_is_computed_from_rgb_not_bgr():
    # A pattern visible only in the red channel: RGB2GRAY weights red 0.299, BGR2GRAY 0.114.
    frames = translating_clip(2, 0)
    red_only = np.zeros_like(frames)
    red_only[..., 0] = frames[..., 0]
    flow = farneback_flow(red_only)
    assert abs(np.median(flow[:, 16:48, 16:48, 0]) - 2.0) < 0.3


def test_frame_out_stops_occluding():
    flow = constant_flow(6, 32, 32, dx=5.0, dy=0.0)
    anchors = np.array([[4.0, 4.0], [28.0, 12.0]], dtype=np.float32)
    tracks, valid = track_anchors(flow, anchors)
    # Anchor 1: 28 -> 33 is off screen (W = 32) at frame 1; anchor 0: 4, 9, ..., 29, then 34.
    assert valid[1].tolist() == [True, False, False, False, False, False]
    assert valid[0].tolist() == [True, True, True, True, True, True]
    assert tracks[0, -1, 0] == pytest.approx(29.0)
    boxes = tube_boxes(tracks, valid, (8, 8), (32, 32))
    assert np.all(boxes[1, 1:] == 0)  # nothing occluded after the frame-out
    assert boxes[1, 0].tolist() == [24, 8, 32, 16]
    assert boxes[0, 0].tolist() == [0, 0, 8, 8]  # clipped at the border
    # The step that leaves the frame stays in the displacement vector (paper §3.3, the
    # reference code); the frozen anchor contributes nothing after it.
    assert tracks[1, 1:, 0].tolist() == [33.0] * 5
    disp = displacement_vectors(tracks).reshape(2, 5, 2)
    assert disp[1].tolist() == [[5.0, 0.0]] + [[0.0, 0.0]] * 4
    assert disp[0, :, 0].tolist() == [5.0] * 5


def test_anchors_leaving_together_integrate_together():
    """Anchor 1 leaves the frame at its first step, anchor 0 one step later, both moving right.
    With the exiting step kept, anchor 1's vector is (6, 0, 0, 0, 0, 0), not all zeros, so it
    co-occurs with anchor 0 (cosine 1/sqrt(2)) and integrates with it; dropping the step made
    its co-occurrence 0 with everything."""
    flow = constant_flow(4, 32, 32, dx=6.0, dy=0.0)
    flow[:, :, :12] = 0.0  # the left part is static
    flow[:, 20:, :, 1] = 3.0  # the lower band moves down-right instead
    anchors = np.array([[24.0, 4.0], [28.0, 8.0], [4.0, 4.0], [24.0, 24.0]], np.float32)
    tracks, valid = track_anchors(flow, anchors)
    assert valid[1].tolist() == [True, False, False, False]
    co = cooccurrence(displacement_vectors(tracks))
    assert co[0, 1] == pytest.approx(1 / np.sqrt(2)) and co[1, 2] == 0.0
    assert co[1, 3] == pytest.approx(36 / (6 * np.sqrt(90)))  # the down-right mover: less alike
    assert top_k_partners(co, anchors, 1)[1, 0] == 0


def test_integration_picks_masks_that_move_together():
    t, h, w = 6, 48, 48
    flow = constant_flow(t, h, w, 0.0, 0.0)
    flow[..., :24, :24, 0] = 2.0  # top-left quadrant moves right
    flow[..., 24:, 24:, 1] = -2.0  # bottom-right quadrant moves up
    tubes = build_tubes(flow, stride=8, box_hw=(8, 8), topk=3)
    anchors = anchor_grid(h, w, 8)
    right = (anchors[:, 0] < 24) & (anchors[:, 1] < 24)
    up = (anchors[:, 0] >= 24) & (anchors[:, 1] >= 24)
    for i in np.flatnonzero(right):
        assert right[tubes.partners[i]].all(), (i, tubes.partners[i])
        assert i not in tubes.partners[i]
    for i in np.flatnonzero(up):
        assert up[tubes.partners[i]].all()


def test_cooccurrence_is_cosine_with_zero_vectors_neutral():
    disp = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    co = cooccurrence(disp)
    assert co[0, 1] == pytest.approx(1.0)
    assert co[0, 2] == pytest.approx(0.0)
    assert co[0, 3] == 0.0 and co[3, 3] == -np.inf
    anchors = np.array([[0, 0], [50, 0], [1, 0], [2, 0]], dtype=np.float32)
    partners = top_k_partners(co, anchors, 2)
    assert partners[0].tolist() == [1, 2]  # co 1.0 first; then the tie at 0 goes to the nearest
    assert partners[3].tolist() == [2, 0]  # all ties: nearest anchors first (distances 1, 2)
    with pytest.raises(ValueError):
        top_k_partners(co, anchors, 4)
