"""Shared fixtures: small real video files written by the tests, seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.apps import synth
from tests.test_tubes import translating_clip


def write_video(path: Path, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames as an MJPG .avi (OpenCV here has no H.264)."""
    synth.write_video(path, frames, fps)
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    """Three good 12-frame 40×48 clips moving in different directions."""
    d = tmp_path / "videos"
    d.mkdir()
    for i, (dx, dy) in enumerate([(2, 1), (-1, 2), (0, 0)]):
        clip = translating_clip(dx, dy, frames=12, size=48, seed=i)[:, 4:44]
        write_video(d / f"good_{i}.avi", clip)
    return d


@pytest.fixture
def bad_inputs(tmp_path: Path, video_dir: Path) -> dict[str, Path]:
    """Each kind of bad input the pipeline must dead-letter."""
    d = tmp_path / "bad"
    d.mkdir()
    zero = d / "zero.mp4"
    zero.write_bytes(b"")
    text = d / "text.mp4"
    text.write_text("this is not a video\n" * 20)
    full = write_video(d / "full.avi", translating_clip(1, 1, frames=12, size=48, seed=7))
    truncated = d / "truncated.avi"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    full.unlink()
    short = write_video(d / "short.avi", translating_clip(1, 0, frames=3, size=48, seed=8))
    return {"zero": zero, "text": text, "truncated": truncated, "short": short,
            "missing": d / "missing.avi"}


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
