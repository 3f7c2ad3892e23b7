"""Synthetic action dataset with per-frame boxes of the class-relevant object (ground truth).

Each clip shows ONE target object (a red disc) whose motion defines the class, 1-3 moving
distractors (other shapes and colours, random directions and spins) and a textured background;
optionally the camera pans, so that everything shifts and the target may leave the frame, and
optionally one distractor is a decoy of the target's colour (square, triangle or cross), so
that the network must tell the target by shape, not only by colour.

Classes (index: name): 0 ``move_right``, 1 ``move_left``, 2 ``move_up``, 3 ``move_down`` --
the direction of the target's motion in the world. A single frame never tells the class: the
target's start position is random and distractors move in the same directions.

Rendering is pure numpy (parameters in, ``uint8`` frames and ``bool`` target masks out); the
boxes are the tight bounding boxes of the rendered target masks, so they are exact. The CLI
writes a UCF101-like layout::

    DIR/classes.txt                      one class name per line, in index order
    DIR/videos/<class>/<class>_<nnn>.avi MJPG (OpenCV here cannot write H.264)
    DIR/splits/train.txt, test.txt       video paths relative to DIR, one per line
    DIR/train.jsonl, test.jsonl          {"video", "label", "start_frame", "boxes"} per clip
                                         (+ metadata "camera_pan", "decoy": booleans)

Usage::

    python -m pipeline.apps.synth --out /tmp/vidxai_synth --seed 0 --per-class 250 --size 128 \\
        --frames 24 --camera-pan --decoy-fraction 0.5

Everything is deterministic from ``--seed``: the same seed gives byte-identical manifests and
videos that decode to identical frames.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("move_right", "move_left", "move_up", "move_down")
# Unit motion direction (dx, dy) of each class, image axes (x right, y down).
CLASS_DIRECTIONS: tuple[tuple[int, int], ...] = ((1, 0), (-1, 0), (0, -1), (0, 1))
# Label after a horizontal flip / a vertical flip of the frames (time reversal: both).
HFLIP_LABEL: tuple[int, ...] = (1, 0, 2, 3)
VFLIP_LABEL: tuple[int, ...] = (0, 1, 3, 2)
REVERSE_LABEL: tuple[int, ...] = (1, 0, 3, 2)

TARGET_SHAPE = "circle"
TARGET_COLOUR = (215, 35, 40)
DISTRACTOR_SHAPES = ("circle", "square", "triangle", "cross", "ring")
DECOY_SHAPES = ("square", "triangle", "cross")  # decoys share the target's colour, not its shape
DISTRACTOR_COLOURS = (
    (50, 90, 225), (45, 175, 70), (230, 210, 50), (60, 200, 210),
    (235, 235, 235), (140, 70, 200), (30, 30, 30),
)
# All sizes and speeds are fractions of the frame size, so any --size renders the same scene.
TARGET_RADIUS = (0.075, 0.10)
TARGET_SPEED = (0.016, 0.026)  # per frame
DISTRACTOR_RADIUS = (0.06, 0.11)
DISTRACTOR_SPEED = (0.012, 0.028)
DISTRACTOR_SPIN = 0.15  # rad per frame, at most
PAN_SPEED = (0.2, 0.35)  # fraction of the target's speed: the class direction stays dominant
COLOUR_JITTER = 15
NOISE_SIGMA = 3.0


@dataclass(frozen=True)
class ObjectTrack:
    """One object moving at constant velocity (and spin) in world pixels.

    Attributes:
        shape: one of ``circle``, ``square``, ``triangle``, ``cross``, ``ring``.
        colour: RGB fill colour, 0..255.
        radius: half the object's extent, in pixels.
        mid: (x, y) world position of the centre at the middle of the clip.
        velocity: (vx, vy) in pixels per frame.
        angle: orientation at the middle of the clip, radians.
        spin: angular velocity, radians per frame.
    """

    shape: str
    colour: tuple[int, int, int]
    radius: float
    mid: tuple[float, float]
    velocity: tuple[float, float]
    angle: float = 0.0
    spin: float = 0.0


@dataclass(frozen=True)
class ClipParams:
    """Everything needed to render one clip (sampled by :func:`sample_clip_params`).

    Attributes:
        label: class index into :data:`CLASS_NAMES`.
        size: frame side in pixels (frames are square).
        num_frames: number of frames T.
        target: the class-relevant object (drawn last, never occluded).
        distractors: other moving objects.
        camera_velocity: (vx, vy) of the camera in world pixels per frame ((0, 0) = static).
        background_seed: seed of the background texture.
        noise_seed: seed of the per-frame sensor noise.
    """

    label: int
    size: int
    num_frames: int
    target: ObjectTrack
    distractors: tuple[ObjectTrack, ...]
    camera_velocity: tuple[float, float]
    background_seed: int
    noise_seed: int


# ----------------------------------------------------------------------------- sampling


def _jitter_colour(rng: np.random.Generator, colour: Sequence[int]) -> tuple[int, int, int]:
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(colour) + jitter, 0, 255))  # type: ignore


def _sample_target(rng: np.random.Generator, label: int, size: int, num_frames: int,
                   free_exit: bool) -> ObjectTrack:
    """Target track; without ``free_exit`` its whole trajectory stays inside the frame."""
    radius = rng.uniform(*TARGET_RADIUS) * size
    speed = rng.uniform(*TARGET_SPEED) * size
    dx, dy = CLASS_DIRECTIONS[label]
    half_travel = speed * (num_frames - 1) / 2
    lo, hi = radius, size - 1 - radius
    along_margin = 0.0 if free_exit else min(half_travel, (hi - lo) / 2)
    along = rng.uniform(lo + along_margin, hi - along_margin)
    across = rng.uniform(lo, hi)
    mid = (along, across) if dx else (across, along)
    return ObjectTrack(TARGET_SHAPE, _jitter_colour(rng, TARGET_COLOUR), float(radius),
                       (float(mid[0]), float(mid[1])), (dx * speed, dy * speed))


def _sample_distractor(rng: np.random.Generator, size: int, decoy: bool = False) -> ObjectTrack:
    """A distractor; a ``decoy`` has the target's colour but another shape."""
    shapes = DECOY_SHAPES if decoy else DISTRACTOR_SHAPES
    shape = shapes[rng.integers(len(shapes))]
    palette = (TARGET_COLOUR,) if decoy else DISTRACTOR_COLOURS
    colour = _jitter_colour(rng, palette[rng.integers(len(palette))])
    radius = rng.uniform(*DISTRACTOR_RADIUS) * size
    heading = rng.uniform(0, 2 * math.pi)
    # A quarter of the distractors move exactly along an axis, like the target.
    if rng.random() < 0.25:
        heading = rng.integers(4) * math.pi / 2
    speed = rng.uniform(*DISTRACTOR_SPEED) * size
    mid = rng.uniform(radius, size - 1 - radius, size=2)
    spin = 0.0 if shape in ("circle", "ring") else rng.uniform(-DISTRACTOR_SPIN, DISTRACTOR_SPIN)
    return ObjectTrack(shape, colour, float(radius), (float(mid[0]), float(mid[1])),
                       (speed * math.cos(heading), speed * math.sin(heading)),
                       float(rng.uniform(0, 2 * math.pi)), float(spin))


def sample_clip_params(rng: np.random.Generator, label: int, size: int = 128,
                       num_frames: int = 24, camera_pan: bool = False, decoy: bool = False
                       ) -> ClipParams:
    """Draw the random parameters of one clip of class ``label``.

    Without ``camera_pan`` the target stays fully inside the frame. With it the camera moves at
    20-35 % of the target's speed in a random direction and the target's trajectory is only
    required to be in view at the middle frame, so it may enter or leave the frame (null boxes).
    With ``decoy`` the first distractor has the target's colour (but another shape), so colour
    alone does not identify the target.

    Args:
        rng: source of randomness (consumed).
        label: class index.
        size: frame side in pixels.
        num_frames: number of frames T.
        camera_pan: whether the camera moves.
        decoy: whether one distractor is a same-coloured decoy.
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not in 0..{len(CLASS_NAMES) - 1}")
    target = _sample_target(rng, label, size, num_frames, free_exit=camera_pan)
    distractors = tuple(_sample_distractor(rng, size, decoy=decoy and k == 0)
                        for k in range(int(rng.integers(1, 4))))
    camera = (0.0, 0.0)
    if camera_pan:
        heading = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(*PAN_SPEED) * math.hypot(*target.velocity)
        camera = (speed * math.cos(heading), speed * math.sin(heading))
    seeds = rng.integers(0, 2**31 - 1, size=2)
    return ClipParams(label, size, num_frames, target, distractors, camera,
                      int(seeds[0]), int(seeds[1]))


# ----------------------------------------------------------------------------- rendering


def camera_offsets(velocity: tuple[float, float], num_frames: int) -> np.ndarray:
    """Integer camera position per frame, zero at the middle frame.

    Returns:
        int64 (T, 2): (x, y) offset of the view in world pixels (view = world - offset).
    """
    t = np.arange(num_frames, dtype=np.float64) - (num_frames - 1) / 2
    return np.round(np.outer(t, velocity)).astype(np.int64)


def object_centres(track: ObjectTrack, num_frames: int) -> np.ndarray:
    """World centre of ``track`` per frame.

    Returns:
        float64 (T, 2): (x, y).
    """
    t = np.arange(num_frames, dtype=np.float64) - (num_frames - 1) / 2
    return np.asarray(track.mid) + np.outer(t, track.velocity)


def shape_mask(shape: str, centre: tuple[float, float], radius: float, angle: float,
               height: int, width: int) -> np.ndarray:
    """Rasterise one shape (hard edges, pixel centres at integer coordinates).

    Args:
        shape: ``circle``, ``ring``, ``square``, ``triangle`` or ``cross``.
        centre: (x, y) in pixels of the output grid (may lie outside it).
        radius: half extent in pixels.
        angle: rotation in radians.
        height: rows of the output.
        width: columns of the output.

    Returns:
        bool (height, width), True inside the shape.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    px, py = xs - centre[0], ys - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * px + s * py, -s * px + c * py
    d2 = px * px + py * py
    if shape == "circle":
        return d2 <= radius * radius
    if shape == "ring":
        return (d2 <= radius * radius) & (d2 >= (0.55 * radius) ** 2)
    if shape == "square":
        return (np.abs(u) <= 0.8 * radius) & (np.abs(v) <= 0.8 * radius)
    if shape == "cross":
        arm = 0.3 * radius
        return (((np.abs(u) <= radius) & (np.abs(v) <= arm))
                | ((np.abs(u) <= arm) & (np.abs(v) <= radius)))
    if shape == "triangle":
        inside = np.ones((height, width), dtype=bool)
        for k in range(3):
            a = angle + k * 2 * math.pi / 3
            inside &= (math.cos(a) * px + math.sin(a) * py) <= radius / 2
        return inside
    raise ValueError(f"unknown shape {shape!r}")


def render_background(seed: int, height: int, width: int) -> np.ndarray:
    """Textured, low-saturation background: smooth noise, a gradient and soft colour blobs.

    Args:
        seed: texture seed.
        height: rows.
        width: columns.

    Returns:
        float32 (height, width, 3) on the 0..255 scale (not clipped to uint8 yet).
    """
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), rng.uniform(80, 170), dtype=np.float32)
    for cells, amplitude in ((5, 35.0), (18, 18.0), (48, 8.0)):
        grid = rng.normal(size=(cells, cells, 3)).astype(np.float32)
        img += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    heading = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(heading) * xs + math.sin(heading) * ys) / max(height, width)
    img += (rng.uniform(20, 60) * ramp)[..., None]
    for _ in range(int(rng.integers(4, 9))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        sigma = rng.uniform(0.05, 0.15) * max(height, width)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma))
        img += blob[..., None] * rng.uniform(-60, 60, size=3).astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    return grey + 0.35 * (img - grey)


def _world_margin(params: ClipParams) -> int:
    offsets = camera_offsets(params.camera_velocity, params.num_frames)
    return int(np.abs(offsets).max()) + 1


def render_clip(params: ClipParams) -> tuple[np.ndarray, np.ndarray]:
    """Render the frames of one clip and the target's visible mask in each frame.

    Args:
        params: the clip's parameters.

    Returns:
        (frames uint8 (T, S, S, 3) RGB, target_masks bool (T, S, S)) with S = ``params.size``.
    """
    size, num_frames = params.size, params.num_frames
    margin = _world_margin(params)
    world = render_background(params.background_seed, size + 2 * margin, size + 2 * margin)
    offsets = camera_offsets(params.camera_velocity, num_frames)
    noise_rng = np.random.default_rng(params.noise_seed)
    tracks = (*params.distractors, params.target)  # target drawn last: never occluded
    centres = [object_centres(track, num_frames) for track in tracks]
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, size, size), dtype=bool)
    t_mid = (num_frames - 1) / 2
    for t in range(num_frames):
        ox, oy = offsets[t]
        frame = world[margin + oy:margin + oy + size, margin + ox:margin + ox + size].copy()
        for track, centre in zip(tracks, centres, strict=True):
            view_centre = (centre[t, 0] - ox, centre[t, 1] - oy)
            angle = track.angle + track.spin * (t - t_mid)
            mask = shape_mask(track.shape, view_centre, track.radius, angle, size, size)
            frame[mask] = track.colour
        masks[t] = mask  # the last drawn object is the target
        frame += noise_rng.normal(0.0, NOISE_SIGMA, size=frame.shape).astype(np.float32)
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames, masks


def boxes_from_masks(masks: np.ndarray) -> list[list[int] | None]:
    """Tight box of each frame's mask, ``[x0, y0, x1, y1]`` with exclusive x1/y1.

    Args:
        masks: bool (T, H, W).

    Returns:
        T entries: a box, or None where the mask is empty (target out of view).
    """
    boxes: list[list[int] | None] = []
    for mask in masks:
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        if cols.size == 0:
            boxes.append(None)
            continue
        boxes.append([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1])
    return boxes


def clip_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """The random generator of clip ``index`` of class ``label`` (independent streams)."""
    return np.random.default_rng(np.random.SeedSequence([seed, label, index]))


# ----------------------------------------------------------------------------- writing


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0) -> None:
    """Write RGB frames ``uint8 (T, H, W, 3)`` to an MJPG ``.avi`` with OpenCV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write MJPG video {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def generate_dataset(out: Path, seed: int = 0, per_class: int = 100, size: int = 128,
                     num_frames: int = 24, camera_pan: bool = False, pan_fraction: float = 0.5,
                     test_fraction: float = 0.25, fps: float = 25.0,
                     decoy_fraction: float = 0.0) -> dict[str, int]:
    """Render and write the whole dataset under ``out`` (layout in the module docstring).

    Clip ``i`` of each class is in the test split when ``i >= per_class - n_test`` with
    ``n_test = round(per_class * test_fraction)``. With ``camera_pan`` a clip pans with
    probability ``pan_fraction``; a clip has a same-coloured decoy with probability
    ``decoy_fraction``.

    Returns:
        Counts: ``{"train", "test", "panned", "decoys", "null_boxes"}``.
    """
    n_test = int(round(per_class * test_fraction))
    records: dict[str, list[str]] = {"train": [], "test": []}
    paths: dict[str, list[str]] = {"train": [], "test": []}
    counts = {"train": 0, "test": 0, "panned": 0, "decoys": 0, "null_boxes": 0}
    for label, name in enumerate(CLASS_NAMES):
        for index in range(per_class):
            rng = clip_rng(seed, label, index)
            pan = camera_pan and bool(rng.random() < pan_fraction)
            decoy = bool(rng.random() < decoy_fraction)
            params = sample_clip_params(rng, label, size, num_frames, camera_pan=pan, decoy=decoy)
            frames, masks = render_clip(params)
            rel = f"videos/{name}/{name}_{index:03d}.avi"
            write_video(out / rel, frames, fps)
            boxes = boxes_from_masks(masks)
            split = "test" if index >= per_class - n_test else "train"
            records[split].append(json.dumps(
                {"video": rel, "label": label, "start_frame": 0, "boxes": boxes,
                 "camera_pan": pan, "decoy": decoy}))
            paths[split].append(rel)
            counts[split] += 1
            counts["panned"] += int(pan)
            counts["decoys"] += int(decoy)
            counts["null_boxes"] += sum(box is None for box in boxes)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    for split in ("train", "test"):
        (out / "splits" / f"{split}.txt").write_text("".join(p + "\n" for p in paths[split]))
        (out / f"{split}.jsonl").write_text("".join(r + "\n" for r in records[split]))
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.apps.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=100, help="clips per class")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
    parser.add_argument("--frames", type=int, default=24, help="frames per clip")
    parser.add_argument("--camera-pan", action="store_true", help="let the camera pan")
    parser.add_argument("--pan-fraction", type=float, default=0.5,
                        help="fraction of clips that pan when --camera-pan is set")
    parser.add_argument("--decoy-fraction", type=float, default=0.0,
                        help="fraction of clips with a decoy of the target's colour")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--fps", type=float, default=25.0)
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.size < 16 or args.frames < 2:
        parser.error("need --per-class >= 1, --size >= 16 and --frames >= 2")
    if not all(0.0 <= f <= 1.0 for f in (args.test_fraction, args.pan_fraction,
                                          args.decoy_fraction)):
        parser.error("--test-fraction, --pan-fraction and --decoy-fraction must be in [0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = generate_dataset(args.out, args.seed, args.per_class, args.size, args.frames,
                              args.camera_pan, args.pan_fraction, args.test_fraction, args.fps,
                              args.decoy_fraction)
    print(f"wrote {counts['train']} train + {counts['test']} test clips to {args.out} "
          f"({counts['panned']} panned, {counts['decoys']} with a decoy, "
          f"{counts['null_boxes']} null boxes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
