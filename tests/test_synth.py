"""Synthetic dataset (pipeline.apps.synth) and the committed synth_small3d checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import build_model
from models.small3d import CHECKPOINT, SYNTH_CLASS_NAMES
from pipeline.apps import synth
from pipeline.apps.train import to_input
from transforms.decode import ClipError, decode_clip, resize_and_crop


def _render(seed: int, label: int, index: int = 0, size: int = 128, frames: int = 24,
            pan: bool = False, decoy: bool = False) -> tuple[synth.ClipParams, np.ndarray,
                                                             np.ndarray]:
    params = synth.sample_clip_params(synth.clip_rng(seed, label, index), label, size, frames,
                                      camera_pan=pan, decoy=decoy)
    clip, masks = synth.render_clip(params)
    return params, clip, masks


def _target_coloured(clip: np.ndarray) -> np.ndarray:
    """bool (T, H, W): pixels of the target's red (nothing else in a decoy-free clip is red)."""
    rgb = clip.astype(np.int32)
    return rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2]) > 100


def _centres(boxes: list) -> np.ndarray:
    return np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in boxes if b is not None])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.generate_dataset(out, seed=3, per_class=2, size=64, num_frames=10, camera_pan=True,
                           decoy_fraction=0.5, test_fraction=0.5)
    return out


def test_rendering_is_deterministic_per_seed() -> None:
    p1, clip1, masks1 = _render(7, 2, pan=True, decoy=True)
    p2, clip2, masks2 = _render(7, 2, pan=True, decoy=True)
    assert p1 == p2
    np.testing.assert_array_equal(clip1, clip2)
    np.testing.assert_array_equal(masks1, masks2)
    p3, clip3, _ = _render(8, 2, pan=True, decoy=True)
    assert p3 != p1 and not np.array_equal(clip3, clip1)


def test_dataset_is_deterministic(dataset: Path, tmp_path: Path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    kwargs = dict(per_class=2, size=64, num_frames=10, camera_pan=True, decoy_fraction=0.5,
                  test_fraction=0.5)
    synth.generate_dataset(again, seed=3, **kwargs)
    synth.generate_dataset(other, seed=4, **kwargs)
    for name in ("train.jsonl", "test.jsonl", "classes.txt", "splits/train.txt"):
        assert (again / name).read_bytes() == (dataset / name).read_bytes()
    assert (other / "train.jsonl").read_bytes() != (dataset / "train.jsonl").read_bytes()
    rel = "videos/move_up/move_up_001.avi"
    first = decode_clip(str(dataset / rel), 0, 10, 64).frames
    np.testing.assert_array_equal(decode_clip(str(again / rel), 0, 10, 64).frames, first)
    assert not np.array_equal(decode_clip(str(other / rel), 0, 10, 64).frames, first)


def test_layout_manifest_and_decoding(dataset: Path) -> None:
    assert (dataset / "classes.txt").read_text().split() == list(synth.CLASS_NAMES)
    assert list(synth.CLASS_NAMES) == list(SYNTH_CLASS_NAMES)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (dataset / f"{split}.jsonl").read_text().splitlines()]
        listed = (dataset / "splits" / f"{split}.txt").read_text().split()
        assert [row["video"] for row in rows] == listed and len(rows) == 4
        for row in rows:
            name = synth.CLASS_NAMES[row["label"]]
            assert row["video"].startswith(f"videos/{name}/{name}_")
            assert row["start_frame"] == 0 and len(row["boxes"]) == 10
            for box in row["boxes"]:
                assert box is None or (len(box) == 4 and 0 <= box[0] < box[2] <= 64
                                       and 0 <= box[1] < box[3] <= 64)
            decoded = decode_clip(str(dataset / row["video"]), 0, 10, 64)
            assert decoded.frames.shape == (10, 64, 64, 3) and decoded.source_size == (64, 64)
    with pytest.raises(ClipError, match="too few frames"):
        decode_clip(str(dataset / listed[0]), 0, 11, 64)


@pytest.mark.parametrize("pan", [False, True])
def test_boxes_are_tight_around_the_rendered_target(pan: bool) -> None:
    for label in range(4):
        _, clip, masks = _render(11, label, index=int(pan), pan=pan)
        red = _target_coloured(clip)
        for t, box in enumerate(synth.boxes_from_masks(masks)):
            if box is None:
                assert not masks[t].any() and not red[t].any()
                continue
            x0, y0, x1, y1 = box
            inside = np.zeros_like(masks[t])
            inside[y0:y1, x0:x1] = True
            assert masks[t][~inside].sum() == 0 and red[t][~inside].sum() == 0
            # Tight: the mask touches all four sides of its box.
            assert masks[t][y0].any() and masks[t][y1 - 1].any()
            assert masks[t][:, x0].any() and masks[t][:, x1 - 1].any()
            # The visible target is red (a few noisy pixels aside).
            assert red[t][masks[t]].mean() > 0.9


def test_target_leaving_the_view_gets_null_boxes() -> None:
    target = synth.ObjectTrack("circle", synth.TARGET_COLOUR, 8.0, (100.0, 60.0), (3.0, 0.0))
    distractor = synth.ObjectTrack("square", (50, 90, 225), 8.0, (30.0, 30.0), (0.0, 1.0))
    params = synth.ClipParams(0, 128, 24, target, (distractor,), (-0.5, 0.0), 1, 2)
    clip, masks = synth.render_clip(params)
    boxes = synth.boxes_from_masks(masks)
    # Centre at frame t: 100 + 3.5 * (t - 11.5) in view pixels -> fully out once > 135.
    gone = [t for t, box in enumerate(boxes) if box is None]
    assert gone == list(range(22, 24))
    assert boxes[21] is not None and boxes[21][2] == 128  # partly visible: clipped to the frame
    assert not _target_coloured(clip)[gone].any()


@pytest.mark.parametrize("label", range(4))
def test_class_motion_is_visible_in_the_box_centres(label: int) -> None:
    dx, dy = synth.CLASS_DIRECTIONS[label]
    for index, pan in enumerate((False, True)):
        params, _, masks = _render(5, label, index=index, pan=pan)
        centres = _centres(synth.boxes_from_masks(masks))
        along = centres @ np.array([dx, dy], dtype=float)
        across = centres @ np.array([dy, -dx], dtype=float)
        if not pan:  # whole trajectory in view: steady motion along the class direction
            assert len(centres) == params.num_frames
            assert np.all(np.diff(along) > 0)
            speed = np.hypot(*params.target.velocity)
            assert along[-1] - along[0] == pytest.approx(speed * (len(along) - 1), abs=2.0)
        assert along[-1] - along[0] > 2 * abs(across[-1] - across[0])


def test_flip_label_tables_match_the_directions() -> None:
    directions = synth.CLASS_DIRECTIONS
    for label, (dx, dy) in enumerate(directions):
        assert directions[synth.HFLIP_LABEL[label]] == (-dx, dy)
        assert directions[synth.VFLIP_LABEL[label]] == (dx, -dy)
        assert directions[synth.REVERSE_LABEL[label]] == (-dx, -dy)


def test_committed_checkpoint_classifies_fresh_clips() -> None:
    assert CHECKPOINT.is_file(), "models/data/synth_small3d.pt is not committed"
    assert CHECKPOINT.stat().st_size <= 5 * 2**20
    model, spec = build_model("synth_small3d")
    clips, labels = [], []
    for label in range(4):
        for index in range(2):  # one static camera, one panning camera with a decoy
            _, clip, _ = _render(987, label, index, 128, spec.num_frames, pan=bool(index),
                                 decoy=bool(index))
            clips.append(np.stack([resize_and_crop(f, spec.input_size, spec.resize_ratio)[0]
                                   for f in clip]))
            labels.append(label)
    with torch.no_grad():
        preds = model(to_input(np.stack(clips), spec)).argmax(1).numpy()
    assert (preds == np.array(labels)).mean() >= 0.75
