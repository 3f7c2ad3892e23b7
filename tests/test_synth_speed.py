"""The speed sweep of pipeline.apps.synth (controlled target speed, deforming targets) and its
per-bin report (pipeline.apps.evaluate_bins)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import build_model
from pipeline.apps import evaluate_bins, synth
from pipeline.apps.train import to_input
from transforms.decode import decode_clip, resize_and_crop
from transforms.scoring import Scorer


def _speed_clip(seed: int, label: int, index: int, speed: float, deform: str = "none",
                size: int = 64, frames: int = 16, pan: bool = False):
    params = synth.sample_speed_params(synth.speed_rng(seed, label, index), label, speed, size,
                                       frames, camera_pan=pan, deform=deform)
    clip, masks = synth.render_clip(params)
    return params, clip, masks


def _centres(boxes: list) -> np.ndarray:
    return np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in boxes])


@pytest.mark.parametrize("deform", synth.DEFORMS)
@pytest.mark.parametrize("speed", [0.02, 0.04])
def test_the_target_moves_at_the_requested_speed_fully_in_view(speed: float, deform: str):
    for label in range(4):
        direction = np.array(synth.CLASS_DIRECTIONS[label], dtype=float)
        for index in range(3):
            params, _, masks = _speed_clip(6, label, index, speed, deform)
            boxes = synth.boxes_from_masks(masks)
            assert all(b is not None for b in boxes)
            # Fully in view: no box touches the border.
            assert all(b[0] > 0 and b[1] > 0 and b[2] < 64 and b[3] < 64 for b in boxes)
            centres = _centres(boxes)
            along = np.diff(centres, axis=0) @ direction
            across = centres @ direction[::-1]
            # Box centres are rounded to the pixel grid: 1 px over 15 frames.
            assert along.mean() == pytest.approx(speed * 64, abs=1 / 15)
            # (The walker's swinging limbs round to the pixel grid unevenly on its two sides.)
            assert np.all(along > 0) and np.ptp(across) <= (2 if deform == "walker" else 1)
            assert np.hypot(*params.target.velocity) == pytest.approx(speed * 64)


@pytest.mark.parametrize("label", range(4))
def test_pan_and_too_fast_to_fit(label: int):
    direction = np.array(synth.CLASS_DIRECTIONS[label], dtype=float)
    params, _, masks = _speed_clip(7, label, 1, 0.04, pan=True)
    centres = _centres(synth.boxes_from_masks(masks))
    cam = np.array(params.camera_velocity) @ direction
    assert np.linalg.norm(params.camera_velocity) > 0.2 * 0.04 * 64
    assert (centres[-1] - centres[0]) @ direction == pytest.approx((0.04 * 64 - cam) * 15,
                                                                   abs=1.5)
    # 0.09 of the frame per frame cannot stay in view for 16 frames: centred, it leaves the
    # frame at both ends and is fully in view in the middle.
    _, _, masks = _speed_clip(7, label, 1, 0.09)
    boxes = synth.boxes_from_masks(masks)
    gone = [t for t, b in enumerate(boxes) if b is None]
    shown = [t for t, b in enumerate(boxes) if b is not None]
    assert {0, 15} <= set(gone) and shown == list(range(shown[0], shown[-1] + 1))
    assert all(b[0] > 0 and b[1] > 0 and b[2] < 64 and b[3] < 64 for b in boxes[5:11])
    along = _centres(boxes[5:11]) @ direction
    assert np.diff(along).mean() == pytest.approx(0.09 * 64, abs=0.25)


def test_speed_clips_are_deterministic_and_the_same_scene_in_every_bin():
    p1, c1, m1 = _speed_clip(3, 2, 1, 0.04, "ellipse", pan=True)
    p2, c2, m2 = _speed_clip(3, 2, 1, 0.04, "ellipse", pan=True)
    assert p1 == p2
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(m1, m2)
    assert _speed_clip(4, 2, 1, 0.04, "ellipse", pan=True)[0] != p1
    for speed, deform in [(0.08, "ellipse"), (0.04, "none"), (0.02, "pulse")]:
        p = _speed_clip(3, 2, 1, speed, deform, pan=True)[0]
        assert p.distractors == p1.distractors and p.background_seed == p1.background_seed
        assert p.target.radius == p1.target.radius
    # The default (rigid, no pulse) path renders the disc exactly as before the fields existed.
    rigid = synth.ObjectTrack("circle", (200, 30, 30), 7.5, (20.0, 30.0), (2.0, 0.0))
    mask = synth.shape_mask("circle", (20.0, 30.0), 7.5, 0.0, 64, 64)
    ys, xs = np.mgrid[0:64, 0:64]
    np.testing.assert_array_equal(mask, (xs - 20.0) ** 2 + (ys - 30.0) ** 2 <= 7.5 ** 2)
    assert synth.object_radius(rigid, 3.0) == 7.5


def _exact_red_boxes(clip: np.ndarray, masks: np.ndarray) -> tuple[list, list, list]:
    """Asserts each frame's box is tight around the target's mask and the mask is red; returns
    the boxes' widths, heights and the masks' areas per frame."""
    rgb = clip.astype(np.int32)
    red = rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2]) > 100
    widths, heights, areas = [], [], []
    for t, box in enumerate(synth.boxes_from_masks(masks)):
        x0, y0, x1, y1 = box
        inside = np.zeros_like(masks[t])
        inside[y0:y1, x0:x1] = True
        assert not masks[t][~inside].any()
        assert masks[t][y0].any() and masks[t][y1 - 1].any()
        assert masks[t][:, x0].any() and masks[t][:, x1 - 1].any()
        assert red[t][masks[t]].mean() > 0.9
        widths.append(x1 - x0)
        heights.append(y1 - y0)
        areas.append(masks[t].sum())
    return widths, heights, areas


@pytest.mark.parametrize("deform", ["pulse", "ellipse"])
def test_deforming_targets_have_exact_boxes_and_really_deform(deform: str):
    for label in range(4):
        _, clip, masks = _speed_clip(11, label, 0, 0.04, deform)
        widths, heights, areas = _exact_red_boxes(clip, masks)
        if deform == "pulse":  # the radius swings by +-35 %: the area by ~3.8x
            assert max(areas) > 2.0 * min(areas)
        else:  # same area, a spinning ellipse: the box's aspect changes
            assert max(areas) < 1.3 * min(areas)
            aspect = np.array(widths) / np.array(heights)
            assert aspect.max() > 1.5 and aspect.min() < 1 / 1.5


def test_the_walker_is_articulated_with_exact_boxes():
    """The walker's limbs swing (its box's width changes ~2x: legs together, legs apart) while
    it stays upright and its size stays (only where the limbs overlap does its area shrink),
    its boxes are exact, and it is red."""
    for label in range(4):
        params, clip, masks = _speed_clip(11, label, 0, 0.03, "walker", size=128)
        assert params.target.shape == "walker" and params.target.swing == synth.WALKER_SWING
        widths, heights, areas = _exact_red_boxes(clip, masks)
        assert max(widths) > 1.8 * min(widths)  # legs together / apart
        assert max(heights) - min(heights) <= 0.15 * max(heights)  # upright throughout
        assert min(areas) > 0.55 * max(areas)


def test_the_walkers_gait_follows_its_speed():
    """One gait cycle per WALKER_STRIDE half heights of travel (cadence proportional to speed,
    never faster than WALKER_MIN_PERIOD frames), and the limbs' angle is a known sinusoid."""
    assert synth.walker_period(10.0, 2.0) == pytest.approx(10.0)
    assert synth.walker_period(10.0, 4.0) == pytest.approx(5.0)
    assert synth.walker_period(10.0, 100.0) == synth.WALKER_MIN_PERIOD
    periods = [_speed_clip(3, 0, 1, s, "walker", size=128)[0].target.pulse_period
               for s in (0.02, 0.04)]
    assert periods[0] == pytest.approx(2 * periods[1])
    track = synth.ObjectTrack("walker", (200, 30, 30), 10.0, (0.0, 0.0), (1.0, 0.0),
                              pulse_period=8.0, pulse_phase=0.0, swing=0.5)
    assert synth.limb_angle(track, 2.0) == pytest.approx(0.5)
    assert synth.limb_angle(track, 4.0) == pytest.approx(0.0, abs=1e-12)
    assert synth.limb_angle(synth.ObjectTrack("circle", (0, 0, 0), 1.0, (0, 0), (0, 0)),
                            2.0) == 0.0
    # Legs at 0 rad: the figure is one vertical stroke below the head, as wide as the head,
    # and its feet are its farthest pixels, WALKER_EXTENT half heights below the centre.
    mask = synth.shape_mask("walker", (32.0, 32.0), 20.0, 0.0, 64, 64, limbs=0.0)
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    assert cols[-1] - cols[0] + 1 <= 2 * 0.24 * 20 + 1
    assert rows[-1] == 32 + int(synth.WALKER_EXTENT * 20) and rows[0] >= 32 - 0.96 * 20


def test_walker_dataset_rows_say_so_and_disc_rows_are_unchanged(tmp_path: Path):
    walker, disc = tmp_path / "walker", tmp_path / "disc"
    synth.main(["--out", str(walker), "--per-class", "2", "--size", "32", "--frames", "8",
                "--target-shape", "walker"])
    synth.main(["--out", str(disc), "--per-class", "2", "--size", "32", "--frames", "8"])
    rows = [json.loads(x) for x in (walker / "train.jsonl").read_text().splitlines()]
    assert rows and all(r["target_shape"] == "walker" for r in rows)
    assert all("target_shape" not in json.loads(x)
               for x in (disc / "train.jsonl").read_text().splitlines())
    rng = synth.clip_rng(0, 1, 0)
    assert synth.sample_clip_params(rng, 1, 32, 8) == synth.sample_clip_params(
        synth.clip_rng(0, 1, 0), 1, 32, 8, target_shape="circle")
    with pytest.raises(ValueError, match="unknown target shape"):
        synth.sample_clip_params(synth.clip_rng(0, 1, 0), 1, target_shape="square")


def test_speed_split_layout_determinism_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "cli"
    assert synth.main(["--out", str(out), "--per-class", "0", "--speed-sweep", "1", "--speeds",
                       "0.02,0.07", "--deforms", "none,pulse", "--size", "32", "--frames", "8",
                       "--camera-pan", "--seed", "2"]) == 0
    assert "16 clips in 4 speed bins" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "speed.jsonl").read_text().splitlines()]
    assert [r["video"] for r in rows] == (out / "splits" / "speed.txt").read_text().split()
    assert not (out / "test.jsonl").exists()
    assert {(r["deform"], r["speed"]) for r in rows} == {
        (d, s) for d in ("none", "pulse") for s in (0.02, 0.07)}
    for r in rows:
        name = synth.CLASS_NAMES[r["label"]]
        assert r["video"] == (f"videos/speed/{synth.speed_bin(r['speed'], r['deform'])}/{name}/"
                              f"{name}_000.avi")
        assert r["kind"] == "speed" and len(r["boxes"]) == 8 and r["decoy"] is False
        assert decode_clip(str(out / r["video"]), 0, 8, 32).frames.shape == (8, 32, 32, 3)
    synth.main(["--out", str(tmp_path / "again"), "--per-class", "0", "--speed-sweep", "1",
                "--speeds", "0.02,0.07", "--deforms", "none,pulse", "--size", "32", "--frames",
                "8", "--camera-pan", "--seed", "2"])
    assert (tmp_path / "again" / "speed.jsonl").read_bytes() == (out / "speed.jsonl").read_bytes()
    for bad in (["--speed-sweep", "1", "--speeds", "0.02,-1"], ["--speed-sweep", "-1"],
                ["--speed-sweep", "1", "--deforms", "walk"]):
        with pytest.raises(SystemExit):
            synth.parse_args(["--out", str(out), "--per-class", "0", *bad])


def test_synth_small3d_sees_the_fast_and_the_deforming_target():
    """The truth is measured, not assumed: the committed network classifies these clips and
    needs the target's boxes, not a same-size box elsewhere."""
    torch.set_num_threads(1)
    model, spec = build_model("synth_small3d")
    grey = (np.array(spec.mean) * 255).round().astype(np.uint8)
    batch, labels = [], []
    for speed, deform in [(0.02, "none"), (0.06, "ellipse")]:
        for label in range(4):
            _, clip, masks = _speed_clip(21, label, 0, speed, deform, size=spec.input_size)
            x = np.stack([resize_and_crop(f, spec.input_size, spec.resize_ratio)[0]
                          for f in clip])  # (rendered at the input size: speeds are relative)
            blank_target, blank_else = x.copy(), x.copy()
            for t, box in enumerate(synth.boxes_from_masks(masks)):
                if box is None:  # out of view (0.06 does not fit in 16 frames)
                    continue
                x0, y0, x1, y1 = box
                blank_target[t, y0:y1, x0:x1] = grey
                if label >= 2:
                    blank_else[t, y0:y1, (x0 + 32) % 64:(x0 + 32) % 64 + x1 - x0] = grey
                else:
                    blank_else[t, (y0 + 32) % 64:(y0 + 32) % 64 + y1 - y0, x0:x1] = grey
            batch += [x, blank_target, blank_else]
            labels.append(label)
    with torch.no_grad():
        p = torch.softmax(model(to_input(np.stack(batch), spec)), 1).numpy()
    p = p[np.arange(len(batch)), np.repeat(labels, 3)].reshape(-1, 3)
    assert (p[:, 0] > 0.5).mean() >= 0.75
    drop_target, drop_else = p[:, 0] - p[:, 1], p[:, 0] - p[:, 2]
    assert drop_target.mean() > 0.3 and drop_target.mean() > drop_else.mean() + 0.3
    assert (drop_target > drop_else).mean() >= 0.85


def test_evaluate_bins_groups_and_pairs(tmp_path: Path):
    manifest = tmp_path / "speed.jsonl"
    manifest.write_text("".join(json.dumps({"video": f"videos/speed/{b}/c_{i}.avi",
                                            "speed": s, "deform": "none"}) + "\n"
                                for b, s in (("a", 0.02), ("b", 0.08)) for i in range(4)))
    bins = evaluate_bins.manifest_bins(manifest, ["deform", "speed"])
    rows = []
    for video, (_, speed) in bins.items():
        for method, spt in (("aosa", 1.0 if speed > 0.05 else 0.5), ("osa", 0.75)):
            rows.append({"method": method, "clip_id": video, "video": f"/data/{video}",
                         "spt_rate": spt, "spt_hits": 3, "spt_frames": 4,
                         "deletion_auc": 0.2, "insertion_auc": 0.9, "correct": True,
                         "seconds": 1.0, "forward_passes": 10, "backward_passes": 0})
    grouped = evaluate_bins.group_rows(rows, bins)
    assert {k: len(v) for k, v in grouped.items()} == {("none", 0.02): 8, ("none", 0.08): 8}
    slow = evaluate_bins.paired_metrics(grouped[("none", 0.02)], "aosa", "osa")
    fast = evaluate_bins.paired_metrics(grouped[("none", 0.08)], "aosa", "osa")
    assert slow["S-PT"].diff[0] == pytest.approx(-0.25) and slow["S-PT"].win_rate == 0
    assert fast["S-PT"].diff[0] == pytest.approx(0.25) and fast["S-PT"].clips == 4
    assert fast["deletion"].diff[0] == 0 and fast["deletion"].win_rate == 0.5
    text = evaluate_bins.report(rows, bins, ["deform", "speed"], [("aosa", "osa")])
    assert "| deform none, speed 0.02 | 4 | 1.00 |" in text and "+0.250" in text
    with pytest.raises(ValueError, match="matches no manifest row"):
        evaluate_bins.group_rows([{**rows[0], "video": "/data/other.avi"}], bins)


def test_elsewhere_is_the_mask_half_the_frame_away():
    mask = np.zeros((2, 8, 8), bool)
    mask[0, 2:3, 1:3] = True
    want = np.zeros_like(mask)
    want[0, 6:7, 5:7] = True  # half the frame away on both axes
    np.testing.assert_array_equal(evaluate_bins.elsewhere(mask), want)
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 6:8, 6:8] = True
    moved = evaluate_bins.elsewhere(mask)
    assert moved[0, 2:4, 2:4].all() and moved.sum() == 4  # wraps


def test_truth_mode_shows_the_network_uses_the_targets_boxes(tmp_path: Path, capsys):
    """``evaluate_bins --truth`` on two bins of the sweep with the committed network: blanking
    the target costs p(label), blanking a same-size box elsewhere does not."""
    synth.main(["--out", str(tmp_path), "--per-class", "0", "--speed-sweep", "1", "--speeds",
                "0.02,0.04", "--size", "128", "--frames", "16", "--seed", "5"])
    capsys.readouterr()
    manifest = tmp_path / "speed.jsonl"
    model, spec = build_model("synth_small3d")
    rows = evaluate_bins.truth_rows(manifest, Scorer(model, spec, torch.device("cpu")))
    assert len(rows) == 8 and np.mean([r["correct"] for r in rows]) >= 0.75
    assert np.mean([r["p"] - r["p_target"] for r in rows]) > 0.3
    assert np.mean([abs(r["p"] - r["p_else"]) for r in rows]) < 0.05
    assert evaluate_bins.main(["--manifest", str(manifest), "--output", str(tmp_path / "o"),
                               "--truth"]) == 0
    table = (tmp_path / "o" / "truth_bins.md").read_text()
    assert "| deform none, speed 0.02 | 4 |" in table and table in capsys.readouterr().out
