"""The synthetic temporal ground truth: motion in a known frame range, and composed clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import build_model
from pipeline.apps import synth
from pipeline.apps.train import to_input
from transforms.decode import decode_clip, resize_and_crop


def _temporal(seed: int, label: int, index: int, frame_range: tuple[int, int], size: int = 64,
              frames: int = 16, pan: bool = False, decoy: bool = False):
    rng = synth.temporal_rng(seed, "temporal", label, index)
    params, onset, offset = synth.sample_temporal_params(rng, label, frame_range, size, frames,
                                                         camera_pan=pan, decoy=decoy)
    clip, masks = synth.render_clip(params)
    return params, onset, offset, clip, masks


def _centre(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("temporal")
    synth.generate_temporal_split(out, seed=2, temporal_per_class=2, composed_per_class=1,
                                  size=64, num_frames=8, camera_pan=True, decoy_fraction=0.5)
    return out


def test_motion_ranges():
    rng = np.random.default_rng(0)
    halves = {synth.sample_motion_range(rng, 16, 8) for _ in range(50)}
    assert halves == {(0, 8), (8, 16)}
    anywhere = {synth.sample_motion_range(rng, 16, 6, "any") for _ in range(400)}
    assert anywhere == {(a, a + 6) for a in range(11)}
    assert synth.sample_motion_range(rng, 16, 16) == (0, 16)
    for bad in [(16, 1, "any"), (16, 17, "any"), (16, 8, "middle")]:
        with pytest.raises(ValueError):
            synth.sample_motion_range(rng, *bad)


@pytest.mark.parametrize("label", range(4))
@pytest.mark.parametrize("pan", [False, True])
def test_target_moves_only_in_the_range(label: int, pan: bool):
    direction = np.array(synth.CLASS_DIRECTIONS[label], dtype=float)
    seen = set()
    for index in range(12):
        a, b = (3, 11) if index % 2 else (0, 8)
        params, onset, offset, _, masks = _temporal(4, label, index, (a, b), pan=pan)
        seen.add((onset, offset))
        visible = masks.reshape(16, -1).any(axis=1)
        assert visible[a:b].all()
        if a > 0:
            assert visible[:a].all() if onset == "start" else not visible[:a].any()
        if b < 16:
            assert visible[b:].all() if offset == "stop" else not visible[b:].any()
        # Fully in view while moving: the disc's area does not shrink at the border.
        area = masks[a:b].reshape(b - a, -1).sum(axis=1)
        assert area.min() >= 0.9 * area.max()
        centres = np.array([_centre(m) for m in masks[a:b]])
        along = np.diff(centres, axis=0) @ direction
        speed = np.hypot(*params.target.velocity)
        cam = np.array(params.camera_velocity) @ direction
        # (The camera's integer offsets make single steps uneven; the whole range is not.)
        assert along.sum() == pytest.approx((speed - cam) * (b - a - 1), abs=1.5)
        assert along.sum() > 0.5 * speed * (b - a - 1) and (pan or np.all(along > 0))
        if not pan:  # still outside the range (the camera shifts everything when it pans)
            for t in [*range(a), *range(b, 16)]:
                if visible[t]:
                    ref = a if t < a else b - 1
                    np.testing.assert_array_equal(masks[t], masks[ref])
    assert seen == {(o, f) for o in synth.ONSETS for f in synth.OFFSETS}


def test_range_boxes_are_null_outside_the_range():
    _, onset, offset, _, masks = _temporal(9, 1, 0, (2, 6), frames=8)
    boxes = synth.range_boxes(masks, (2, 6))
    assert [b is None for b in boxes] == [True, True, False, False, False, False, True, True]
    assert boxes[2:6] == synth.boxes_from_masks(masks)[2:6]


def test_temporal_rendering_is_deterministic_and_the_default_path_unchanged():
    p1, *_, c1, m1 = _temporal(3, 2, 1, (0, 8), pan=True, decoy=True)
    p2, *_, c2, m2 = _temporal(3, 2, 1, (0, 8), pan=True, decoy=True)
    assert p1 == p2
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(m1, m2)
    # A whole-clip motion range and full visibility render exactly like the ordinary clip.
    params = synth.sample_clip_params(synth.clip_rng(0, 1, 0), 1, 64, 10, camera_pan=True)
    base = synth.render_clip(params)
    same = synth.ClipParams(**{**params.__dict__, "target_motion": (0, 10),
                               "target_visible": (0, 10)})
    for x, y in zip(base, synth.render_clip(same), strict=True):
        np.testing.assert_array_equal(x, y)


def test_composed_clips_are_two_halves_of_different_classes():
    for label in range(4):
        rng = synth.temporal_rng(0, "composed", label, 0)
        frames, masks, other, flags = synth.sample_composed(rng, label, 64, 8, True, 0.5, 0.5)
        assert other != label and set(flags) == {"camera_pan", "decoy"}
        # Re-draw the same two parts: the halves are theirs.
        rng = synth.temporal_rng(0, "composed", label, 0)
        assert (label + int(rng.integers(1, 4))) % 4 == other
        parts = []
        for part_label in (label, other):
            pan, decoy = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
            parts.append(synth.render_clip(synth.sample_clip_params(rng, part_label, 64, 8, pan,
                                                                    decoy)))
        np.testing.assert_array_equal(frames[:4], parts[0][0][:4])
        np.testing.assert_array_equal(frames[4:], parts[1][0][4:])
        np.testing.assert_array_equal(masks[:4], parts[0][1][:4])
        assert not masks[4:].any()


def test_split_layout_manifest_and_decoding(dataset: Path):
    rows = [json.loads(x) for x in (dataset / "temporal.jsonl").read_text().splitlines()]
    assert [r["video"] for r in rows] == (dataset / "splits" / "temporal.txt").read_text().split()
    assert not (dataset / "train.jsonl").exists()
    assert (dataset / "classes.txt").read_text().split() == list(synth.CLASS_NAMES)
    assert [r["kind"] for r in rows] == ["temporal"] * 8 + ["composed"] * 4
    for r in rows:
        name = synth.CLASS_NAMES[r["label"]]
        assert r["video"] == f"videos/{r['kind']}/{name}/{Path(r['video']).name}"
        a, b = r["frame_range"]
        assert r["start_frame"] == 0 and len(r["boxes"]) == 8 and b - a == 4
        assert all(box is None for t, box in enumerate(r["boxes"]) if not a <= t < b)
        if r["kind"] == "composed":
            assert (a, b) == (0, 4) and r["second_label"] != r["label"]
        else:
            assert (a, b) in {(0, 4), (4, 8)} and {r["onset"], r["offset"]} <= {
                *synth.ONSETS, *synth.OFFSETS}
            assert all(box is not None for box in r["boxes"][a:b])
        decoded = decode_clip(str(dataset / r["video"]), 0, 8, 64)
        assert decoded.frames.shape == (8, 64, 64, 3)


def test_split_is_deterministic(dataset: Path, tmp_path: Path):
    kw = dict(temporal_per_class=2, composed_per_class=1, size=64, num_frames=8,
              camera_pan=True, decoy_fraction=0.5)
    synth.generate_temporal_split(tmp_path / "again", seed=2, **kw)
    synth.generate_temporal_split(tmp_path / "other", seed=3, **kw)
    manifest = (dataset / "temporal.jsonl").read_bytes()
    assert (tmp_path / "again" / "temporal.jsonl").read_bytes() == manifest
    assert (tmp_path / "other" / "temporal.jsonl").read_bytes() != manifest
    rel = "videos/composed/move_up/move_up_000.avi"
    np.testing.assert_array_equal(decode_clip(str(tmp_path / "again" / rel), 0, 8, 64).frames,
                                  decode_clip(str(dataset / rel), 0, 8, 64).frames)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "cli"
    assert synth.main(["--out", str(out), "--per-class", "0", "--temporal", "1", "--composed",
                       "1", "--size", "32", "--frames", "6", "--range-starts", "any",
                       "--motion-frames", "3"]) == 0
    rows = [json.loads(x) for x in (out / "temporal.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and not (out / "test.jsonl").exists()
    assert all(r["frame_range"][1] - r["frame_range"][0] == 3 for r in rows[:4])
    assert "4 temporal + 4 composed" in capsys.readouterr().out
    for bad in (["--per-class", "0"], ["--temporal", "1", "--motion-frames", "1"],
                ["--composed", "-1"]):
        with pytest.raises(SystemExit):
            synth.parse_args(["--out", str(out), *bad])


def test_synth_small3d_needs_the_range_not_the_rest():
    """The truth is measured, not assumed: blanking the range costs the label far more."""
    torch.set_num_threads(1)
    model, spec = build_model("synth_small3d")
    grey = (np.array(spec.mean) * 255).round().astype(np.uint8)
    clips, ranges, labels = [], [], []
    for label in range(4):
        for index in range(2):
            a, b = (0, 8) if index == 0 else (8, 16)
            *_, frames, _ = _temporal(21, label, index, (a, b), size=128)
            clips.append(frames)
            ranges.append((a, b))
            labels.append(label)
            rng = synth.temporal_rng(21, "composed", label, index)
            clips.append(synth.sample_composed(rng, label, 128, 16, decoy_fraction=0.0)[0])
            ranges.append((0, 8))
            labels.append(label)
    batch = []
    for frames, (a, b) in zip(clips, ranges, strict=True):
        x = np.stack([resize_and_crop(f, spec.input_size, spec.resize_ratio)[0] for f in frames])
        blank_range, blank_rest = x.copy(), x.copy()
        blank_range[a:b] = grey
        blank_rest[:a], blank_rest[b:] = grey, grey
        batch += [x, blank_range, blank_rest]
    with torch.no_grad():
        p = torch.softmax(model(to_input(np.stack(batch), spec)), 1).numpy()
    p = p[np.arange(len(batch)), np.repeat(labels, 3)].reshape(-1, 3)
    drop_range, drop_rest = p[:, 0] - p[:, 1], p[:, 0] - p[:, 2]
    assert drop_range.mean() > 0.25 and drop_range.mean() > drop_rest.mean() + 0.25
    assert (drop_range > drop_rest).mean() >= 0.85


# --- real footage: pipeline.apps.compose (its I3D run is measured by hand, see its docstring) --


def test_compose_parts_and_target_choice(tmp_path: Path):
    from pipeline.apps import compose

    videos = {"a": tmp_path / "a.avi", "b": tmp_path / "b.avi"}
    for k, path in enumerate(videos.values()):
        frames = np.full((12, 48, 64, 3), 40 + 150 * k, dtype=np.uint8)
        synth.write_video(path, frames)
    assert compose.parse_part("a:3", videos) == (str(videos["a"]), 3)
    assert compose.parse_part("/x/y:z.avi:7", videos) == ("/x/y:z.avi", 7)
    with pytest.raises(ValueError, match="NAME:START"):
        compose.parse_part("a", videos)
    frames = compose.compose_frames((str(videos["a"]), 3), (str(videos["b"]), 0))
    assert frames.shape == (16, 256, 256, 3)
    assert abs(int(frames[:8].mean()) - 40) <= 3 and abs(int(frames[8:].mean()) - 190) <= 3
    # Class 0 needs both halves, class 1 only the first, class 2 only the second.
    probs = np.array([[0.5, 0.3, 0.2], [0.01, 0.01, 0.2], [0.01, 0.35, 0.01]])
    chosen, top = compose.choose_target(probs, ["x", "y", "z"], 3, 0.1, 0.8)
    assert chosen is not None and chosen.name == "y" and [b.name for b in top] == ["x", "y", "z"]
    assert compose.choose_target(probs, ["x", "y", "z"], 1, 0.1, 0.8)[0] is None
    assert compose.choose_target(probs, ["x", "y", "z"], 1, 0.1, 0.8, "z")[0].name == "z"
    with pytest.raises(ValueError, match="unknown class"):
        compose.choose_target(probs, ["x", "y", "z"], 1, 0.1, 0.8, "w")
