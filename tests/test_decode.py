"""Decoding: frame sampling, RGB order, resize + centre crop, boxes through the same transform."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_video
from transforms.decode import ClipError, clip_boxes, decode_clip, map_boxes, resize_and_crop


def test_resize_and_crop_known_answer():
    frame = np.zeros((40, 48, 3), dtype=np.uint8)  # H 40, W 48
    out, scale, offset = resize_and_crop(frame, 24)
    assert out.shape == (24, 24, 3) and scale == pytest.approx(0.6)
    assert offset == (2, 0)  # resized to 29 x 24: (29 - 24) // 2 columns cut on the left
    _, scale, offset = resize_and_crop(frame, 24, resize_ratio=2.0)  # short side 48
    assert scale == pytest.approx(1.2) and offset == (17, 12)  # 58 x 48: (58-24)//2, (48-24)//2


def test_boxes_follow_the_frames_and_cropped_away_boxes_vanish():
    assert map_boxes([[10, 10, 30, 20], None], 0.6, (2, 0)) == [
        pytest.approx([4.0, 6.0, 16.0, 12.0]), None]
    boxes = [[10, 10, 30, 20], None, [0, 0, 3, 3]]  # the last lies in the cut-off margin
    got = clip_boxes(boxes, (0, 1, 2), (48, 40), 0.6, (2, 0), 24)
    assert got[0] == pytest.approx([4.0, 6.0, 16.0, 12.0]) and got[1] is None
    assert got[2] is None
    with pytest.raises(ValueError, match="3 boxes but the clip uses video frames up to 4"):
        clip_boxes(boxes, (0, 2, 4), (48, 40), 0.6, (2, 0), 24)
    with pytest.raises(ValueError, match="entirely outside"):
        clip_boxes([[50, 0, 60, 10]], (0,), (48, 40), 0.6, (2, 0), 24)


def test_decoded_frames_are_rgb_sampled_with_stride(tmp_path):
    frames = np.zeros((10, 32, 32, 3), dtype=np.uint8)
    for t in range(10):
        frames[t, :, :16] = (200, 30, 30)  # red left half
        frames[t, :, 16:] = (30, 30, 200)  # blue right half
        frames[t, :4, :4] = 25 * t  # frame index written into the corner
    path = write_video(tmp_path / "c.avi", frames)
    clip = decode_clip(str(path), start_frame=1, num_frames=4, size=32, frame_stride=2)
    assert clip.frame_indices == (1, 3, 5, 7) and clip.frames.shape == (4, 32, 32, 3)
    left, right = clip.frames[:, 8:24, 4:12].mean((0, 1, 2)), clip.frames[:, 8:24, 20:28].mean(
        (0, 1, 2))
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]  # R and B not swapped
    corners = clip.frames[:, 1, 1, 1].astype(int)
    np.testing.assert_allclose(corners, [25, 75, 125, 175], atol=12)
    with pytest.raises(ClipError, match="too few frames"):
        decode_clip(str(path), start_frame=5, num_frames=4, size=32, frame_stride=2)


def test_a_video_frame_range_maps_to_clip_frames():
    from transforms.decode import clip_frame_range

    # clip frames sample video frames 10, 12, ..., 24 (start 10, stride 2, 8 frames)
    idx = [10 + 2 * k for k in range(8)]
    assert clip_frame_range((10, 18), idx) == (0, 4)  # video 10, 12, 14, 16
    assert clip_frame_range((13, 15), idx) == (2, 3)  # only video 14
    assert clip_frame_range((0, 10), idx) is None and clip_frame_range((25, 40), idx) is None
    assert clip_frame_range((0, 100), idx) == (0, 8)
