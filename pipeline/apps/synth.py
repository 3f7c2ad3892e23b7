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

Temporal ground truth (*when* the evidence is), written to ``DIR/temporal.jsonl`` (+
``DIR/splits/temporal.txt``) by ``--temporal N`` and / or ``--composed N`` (clips per class);
with ``--per-class 0`` only this split is written (train / test are left alone)::

    python -m pipeline.apps.synth --out /tmp/vidxai_temporal --seed 1 --per-class 0 \\
        --temporal 25 --composed 25 --size 128 --frames 16 --camera-pan --decoy-fraction 0.5

    DIR/videos/temporal/<class>/<class>_<nnn>.avi  the target moves (class direction) only in
        frames [a, b) (``--motion-frames L``, default frames / 2; ``--range-starts halves``: the
        first or the last L frames, ``any``: anywhere); before a it is absent ("onset":
        "appear") or still ("start"), from b on absent ("offset": "leave") or still ("stop");
        distractors move throughout
    DIR/videos/composed/<class>/<class>_<nnn>.avi  STEP's "Cat" protocol: frames [0, T/2) of a
        clip of the label, then frames [T/2, T) of a clip of another class ("second_label")
    rows: {"video", "label", "start_frame": 0, "boxes", "frame_range": [a, b], "kind":
        "temporal" | "composed", "camera_pan", "decoy", + "onset", "offset" | "second_label"}

``frame_range`` is in video frames, end exclusive. ``boxes`` are the target's boxes only inside
the range (where it defines the class), null elsewhere. Use ``--frames`` equal to the network's
clip length (16 for ``synth_small3d``) so the range is a known part of the explained clip.
The truth is measured, not assumed: blanking the range (with the dataset-mean grey) must cost
``synth_small3d`` more of the label's probability than blanking the rest; the figures for the
command above are in docs/EVALUATION.md ("When: the temporal split"), and
``tests/test_synth_temporal.py`` keeps a small version of this check.

Speed sweep (does the target's speed or a deformation change which method explains best?),
written to ``DIR/speed.jsonl`` (+ ``DIR/splits/speed.txt``) by ``--speed-sweep N`` (clips per
class per bin); a bin is one of ``--speeds`` (fractions of the frame per frame, default
0.02,0.04,0.06,0.08; the ordinary clips' 0.016-0.026) and one of ``--deforms`` (``none``: the
rigid disc; ``pulse``: its radius swings by +-35 % with a period of 5-8 frames; ``ellipse``: an
ellipse of the disc's area, axes 0.45 apart, spinning 0.15-0.3 rad per frame; ``walker``: an
articulated stick figure, below)::

    python -m pipeline.apps.synth --out /tmp/vidxai_speed --seed 5 --per-class 0 \
        --speed-sweep 4 --speeds 0.02,0.04,0.06,0.08 --deforms none,ellipse --size 128 \
        --frames 16 --camera-pan

    DIR/videos/speed/<deform>_<speed>/<class>/<class>_<nnn>.avi  e.g. none_0.040
    rows: {"video", "label", "start_frame": 0, "boxes", "kind": "speed", "speed", "deform",
        "camera_pan", "decoy"}

The target moves at exactly the bin's speed; its whole trajectory is in view when it fits in
the frame, else it is centred and leaves the frame at both ends (null boxes; e.g. the rigid
disc from 0.06 on at 16 frames). Clip ``nnn`` of a class is the same scene (background,
distractors, radius, pan, relative position) in every bin. docs/evaluation_speed.md has the
network's accuracy per bin, the blanking check and the methods' scores.

The walker (``--target-shape walker`` for the train / test clips, ``--deforms walker`` in the
sweep) is an upright red stick figure, 1.5 disc radii in half height: a head, a torso, legs
swinging +-0.6 rad about the vertical and arms against them, one gait cycle per two half
heights of travel, so its cadence follows its speed. ``synth_small3d`` was trained on the disc
and does not recognise it: train a network on a walker dataset (``pipeline.apps.train``) and
pass it with ``--checkpoint``; docs/evaluation_speed.md has the recipe and its results.

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
TARGET_SHAPES = ("circle", "walker")  # --target-shape: the red disc, or an articulated figure
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
# The walker: an upright red stick figure (head, torso, two arms, two legs) whose limbs swing
# in a gait whose cadence follows its speed, as a walking person's does.
WALKER_SCALE = 1.5  # its half height, in disc radii (it is thin: ~1/3 of the disc's area)
WALKER_SWING = 0.6  # rad: the legs swing +-34 degrees about the vertical, the arms against them
WALKER_STRIDE = 2.0  # world travel per gait cycle (two steps), in half heights
WALKER_MIN_PERIOD = 3.0  # frames: the fastest gait, so a cycle is never aliased
WALKER_EXTENT = 1.11  # its farthest pixel from the centre (the feet's stroke), in half heights
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
        aspect: minor / major axis of a ``circle`` (1: a disc; below 1 an ellipse of the
            disc's area, major axis along ``angle``).
        pulse: relative amplitude of a periodic change of the radius (0: rigid).
        pulse_period: period of the pulse, or of a ``walker``'s gait, frames.
        pulse_phase: phase of the pulse or of the gait at the middle of the clip, radians.
        swing: a ``walker``'s limb amplitude, radians (:func:`limb_angle`; 0: no gait).
    """

    shape: str
    colour: tuple[int, int, int]
    radius: float
    mid: tuple[float, float]
    velocity: tuple[float, float]
    angle: float = 0.0
    spin: float = 0.0
    aspect: float = 1.0
    pulse: float = 0.0
    pulse_period: float = 1.0
    pulse_phase: float = 0.0
    swing: float = 0.0


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
        target_motion: frames ``[a, b)`` in which the target moves (temporal ground truth), or
            None (it moves throughout). With a range the target stands still before ``a`` (at
            its frame-``a`` position) and after ``b - 1`` (at its frame ``b - 1`` position),
            and ``target.mid`` is its world centre at the middle of the motion, ``(a + b - 1)
            / 2``, instead of the middle of the clip.
        target_visible: frames ``[c, d)`` in which the target is drawn, or None (all).
    """

    label: int
    size: int
    num_frames: int
    target: ObjectTrack
    distractors: tuple[ObjectTrack, ...]
    camera_velocity: tuple[float, float]
    background_seed: int
    noise_seed: int
    target_motion: tuple[int, int] | None = None
    target_visible: tuple[int, int] | None = None


# ----------------------------------------------------------------------------- sampling


def _jitter_colour(rng: np.random.Generator, colour: Sequence[int]) -> tuple[int, int, int]:
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(colour) + jitter, 0, 255))  # type: ignore


def walker_period(radius: float, speed: float) -> float:
    """Frames per gait cycle of a walker of half height ``radius`` moving ``speed`` px per
    frame: one cycle per :data:`WALKER_STRIDE` half heights of travel, at least
    :data:`WALKER_MIN_PERIOD` frames."""
    return max(WALKER_MIN_PERIOD, WALKER_STRIDE * radius / speed)


def _sample_target(rng: np.random.Generator, label: int, size: int, num_frames: int,
                   free_exit: bool, shape: str = TARGET_SHAPE) -> ObjectTrack:
    """Target track; without ``free_exit`` its whole trajectory stays inside the frame.

    ``shape`` ``walker``: :data:`WALKER_SCALE` times the disc's radius, and one more draw (the
    gait's phase) after the disc's, so the disc's clips are unchanged by the option. It is
    placed by its half height like the disc by its radius, so its feet may reach past the frame
    by up to ``WALKER_EXTENT - 1`` half heights (its boxes then end at the border); the speed
    sweep places it by :data:`WALKER_EXTENT`."""
    radius = rng.uniform(*TARGET_RADIUS) * size * (WALKER_SCALE if shape == "walker" else 1.0)
    speed = rng.uniform(*TARGET_SPEED) * size
    dx, dy = CLASS_DIRECTIONS[label]
    half_travel = speed * (num_frames - 1) / 2
    lo, hi = radius, size - 1 - radius
    along_margin = 0.0 if free_exit else min(half_travel, (hi - lo) / 2)
    along = rng.uniform(lo + along_margin, hi - along_margin)
    across = rng.uniform(lo, hi)
    mid = (along, across) if dx else (across, along)
    colour = _jitter_colour(rng, TARGET_COLOUR)
    if shape == "walker":
        return ObjectTrack("walker", colour, float(radius), (float(mid[0]), float(mid[1])),
                           (dx * speed, dy * speed), pulse_period=walker_period(radius, speed),
                           pulse_phase=float(rng.uniform(0, 2 * math.pi)), swing=WALKER_SWING)
    return ObjectTrack(TARGET_SHAPE, colour, float(radius),
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
                       num_frames: int = 24, camera_pan: bool = False, decoy: bool = False,
                       target_shape: str = TARGET_SHAPE) -> ClipParams:
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
        target_shape: one of :data:`TARGET_SHAPES`.
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not in 0..{len(CLASS_NAMES) - 1}")
    if target_shape not in TARGET_SHAPES:
        raise ValueError(f"unknown target shape {target_shape!r}; use one of {TARGET_SHAPES}")
    target = _sample_target(rng, label, size, num_frames, free_exit=camera_pan,
                            shape=target_shape)
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


def target_centres(params: ClipParams) -> np.ndarray:
    """World centre of the target per frame, still outside ``params.target_motion``.

    Returns:
        float64 (T, 2): (x, y).
    """
    if params.target_motion is None:
        return object_centres(params.target, params.num_frames)
    a, b = params.target_motion
    t = np.clip(np.arange(params.num_frames), a, b - 1) - (a + b - 1) / 2
    return np.asarray(params.target.mid) + np.outer(t.astype(np.float64), params.target.velocity)


def target_visible(params: ClipParams) -> np.ndarray:
    """bool (T,): whether the target is drawn in each frame (``params.target_visible``)."""
    shown = np.ones(params.num_frames, dtype=bool)
    if params.target_visible is not None:
        c, d = params.target_visible
        shown[:] = False
        shown[c:d] = True
    return shown


def object_radius(track: ObjectTrack, t: float) -> float:
    """The radius of ``track`` at ``t`` frames from the middle of the clip (pulsing or not)."""
    if track.pulse == 0.0:
        return track.radius
    return track.radius * (1.0 + track.pulse * math.sin(
        2 * math.pi * t / track.pulse_period + track.pulse_phase))


def limb_angle(track: ObjectTrack, t: float) -> float:
    """A walker's leg angle from the vertical at ``t`` frames from the middle of the clip:
    ``swing sin(2 pi t / period + phase)`` (0 for every other object)."""
    if track.swing == 0.0:
        return 0.0
    return track.swing * math.sin(2 * math.pi * t / track.pulse_period + track.pulse_phase)


def _segment(px: np.ndarray, py: np.ndarray, a: tuple[float, float], b: tuple[float, float],
             half_width: float) -> np.ndarray:
    """bool: pixels within ``half_width`` of the segment a-b (offsets from the centre)."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    u = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return (px - ax - u * dx) ** 2 + (py - ay - u * dy) ** 2 <= half_width * half_width


def walker_mask(px: np.ndarray, py: np.ndarray, radius: float, limbs: float) -> np.ndarray:
    """An upright stick figure of half height ``radius`` centred at offset (0, 0): a head, a
    torso, legs at +-``limbs`` rad from the vertical and arms swinging against them."""
    r, w = radius, 0.11 * radius
    hip, shoulder = (0.0, 0.12 * r), (0.0, -0.36 * r)
    inside = px ** 2 + (py + 0.72 * r) ** 2 <= (0.24 * r) ** 2  # head
    inside |= _segment(px, py, (0.0, -0.48 * r), hip, w)  # torso
    for sign in (1.0, -1.0):
        leg, arm = sign * limbs, -sign * limbs
        inside |= _segment(px, py, hip, (hip[0] + 0.88 * r * math.sin(leg),
                                         hip[1] + 0.88 * r * math.cos(leg)), w)
        inside |= _segment(px, py, shoulder, (shoulder[0] + 0.6 * r * math.sin(arm),
                                              shoulder[1] + 0.6 * r * math.cos(arm)), w)
    return inside


def shape_mask(shape: str, centre: tuple[float, float], radius: float, angle: float,
               height: int, width: int, aspect: float = 1.0, limbs: float = 0.0) -> np.ndarray:
    """Rasterise one shape (hard edges, pixel centres at integer coordinates).

    Args:
        shape: ``circle``, ``ring``, ``square``, ``triangle``, ``cross`` or ``walker``.
        centre: (x, y) in pixels of the output grid (may lie outside it).
        radius: half extent in pixels.
        angle: rotation in radians.
        height: rows of the output.
        width: columns of the output.
        aspect: a ``circle`` with ``aspect < 1`` is an ellipse of the same area, semi-axes
            ``radius / sqrt(aspect)`` along ``angle`` and ``radius * sqrt(aspect)`` across.
        limbs: a ``walker``'s leg angle (:func:`walker_mask`; it stays upright, ``angle`` is
            not used).

    Returns:
        bool (height, width), True inside the shape.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    px, py = xs - centre[0], ys - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * px + s * py, -s * px + c * py
    d2 = px * px + py * py
    if shape == "walker":
        return walker_mask(px, py, radius, limbs)
    if shape == "circle" and aspect != 1.0:
        major, minor = radius / math.sqrt(aspect), radius * math.sqrt(aspect)
        return (u / major) ** 2 + (v / minor) ** 2 <= 1.0
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
    centres = [object_centres(track, num_frames) for track in params.distractors]
    centres.append(target_centres(params))
    shown = target_visible(params)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, size, size), dtype=bool)
    t_mid = (num_frames - 1) / 2
    for t in range(num_frames):
        ox, oy = offsets[t]
        frame = world[margin + oy:margin + oy + size, margin + ox:margin + ox + size].copy()
        for k, (track, centre) in enumerate(zip(tracks, centres, strict=True)):
            is_target = k == len(tracks) - 1
            if is_target and not shown[t]:
                continue
            view_centre = (centre[t, 0] - ox, centre[t, 1] - oy)
            angle = track.angle + track.spin * (t - t_mid)
            mask = shape_mask(track.shape, view_centre, object_radius(track, t - t_mid), angle,
                              size, size, track.aspect, limb_angle(track, t - t_mid))
            frame[mask] = track.colour
            if is_target:
                masks[t] = mask
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


# ----------------------------------------------------------------------------- temporal truth

ONSETS = ("appear", "start")  # the target pops into view at frame a / stands still until a
OFFSETS = ("leave", "stop")  # the target vanishes at frame b / stands still from b - 1 on
RANGE_STARTS = ("halves", "any")


def temporal_rng(seed: int, kind: str, label: int, index: int) -> np.random.Generator:
    """The generator of temporal clip ``index`` of ``label``; streams independent of
    :func:`clip_rng`'s (``kind``: ``temporal`` or ``composed``)."""
    return np.random.default_rng(np.random.SeedSequence(
        [seed, label, index, 1 + ("temporal", "composed").index(kind)]))


def sample_motion_range(rng: np.random.Generator, num_frames: int, motion_frames: int,
                        starts: str = "halves") -> tuple[int, int]:
    """``[a, a + motion_frames)``: ``halves`` puts it at the start or the end of the clip (each
    with probability 1/2), ``any`` starts it uniformly in ``0 .. T - motion_frames``."""
    if not 2 <= motion_frames <= num_frames:
        raise ValueError(f"motion frames must be in [2, {num_frames}], got {motion_frames}")
    if starts == "halves":
        a = 0 if rng.random() < 0.5 else num_frames - motion_frames
    elif starts == "any":
        a = int(rng.integers(0, num_frames - motion_frames + 1))
    else:
        raise ValueError(f"unknown range starts {starts!r}; use one of {RANGE_STARTS}")
    return (a, a + motion_frames)


def sample_temporal_params(rng: np.random.Generator, label: int, frame_range: tuple[int, int],
                           size: int = 128, num_frames: int = 16, camera_pan: bool = False,
                           decoy: bool = False) -> tuple[ClipParams, str, str]:
    """A clip whose class-defining motion occupies only ``frame_range`` = ``[a, b)``.

    The target (the same red disc at the same speeds as :func:`sample_clip_params`) moves in
    the class direction during ``[a, b)`` only; before ``a`` it is either absent (``appear``)
    or standing still (``start``), after ``b - 1`` either absent (``leave``) or standing still
    (``stop``), each with probability 1/2. While it moves it stays fully in view (with a panning
    camera too: its position is drawn in view coordinates); distractors move throughout.

    Returns:
        (params, onset, offset).
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not in 0..{len(CLASS_NAMES) - 1}")
    a, b = frame_range
    if not 0 <= a < b <= num_frames:
        raise ValueError(f"frame range [{a}, {b}) is not inside {num_frames} frames")
    radius = rng.uniform(*TARGET_RADIUS) * size
    speed = rng.uniform(*TARGET_SPEED) * size
    dx, dy = CLASS_DIRECTIONS[label]
    velocity = np.array([dx * speed, dy * speed])
    camera = np.zeros(2)
    if camera_pan:
        heading = rng.uniform(0, 2 * math.pi)
        pan = rng.uniform(*PAN_SPEED) * speed
        camera = np.array([pan * math.cos(heading), pan * math.sin(heading)])
    # In view coordinates the target moves at velocity - camera; keep [a, b) fully in view
    # (1 px of slack for the rounded camera offsets).
    half = (b - 1 - a) / 2
    lo, hi = radius + 1, size - 2 - radius
    view_mid = np.empty(2)
    for k in range(2):
        margin = abs(velocity[k] - camera[k]) * half
        view_mid[k] = (rng.uniform(lo + margin, hi - margin) if lo + margin <= hi - margin
                       else (lo + hi) / 2)
    world_mid = view_mid + camera * ((a + b - 1) / 2 - (num_frames - 1) / 2)
    target = ObjectTrack(TARGET_SHAPE, _jitter_colour(rng, TARGET_COLOUR), float(radius),
                         (float(world_mid[0]), float(world_mid[1])),
                         (float(velocity[0]), float(velocity[1])))
    distractors = tuple(_sample_distractor(rng, size, decoy=decoy and k == 0)
                        for k in range(int(rng.integers(1, 4))))
    onset = ONSETS[int(rng.integers(2))]
    offset = OFFSETS[int(rng.integers(2))]
    visible = (a if onset == "appear" else 0, b if offset == "leave" else num_frames)
    seeds = rng.integers(0, 2**31 - 1, size=2)
    params = ClipParams(label, size, num_frames, target, distractors,
                        (float(camera[0]), float(camera[1])), int(seeds[0]), int(seeds[1]),
                        target_motion=(a, b), target_visible=visible)
    return params, onset, offset


def range_boxes(masks: np.ndarray, frame_range: tuple[int, int]) -> list[list[int] | None]:
    """The target's boxes inside ``[a, b)`` (where it defines the class), None elsewhere."""
    a, b = frame_range
    return [box if a <= t < b else None for t, box in enumerate(boxes_from_masks(masks))]


def compose_clips(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray],
                  cut: int) -> tuple[np.ndarray, np.ndarray]:
    """STEP's "Cat" protocol: frames ``[0, cut)`` of ``first`` then ``[cut, T)`` of ``second``.

    Args:
        first, second: (frames uint8 (T, H, W, 3), target masks bool (T, H, W)) of two clips.
        cut: the frame where the second clip takes over.

    Returns:
        (frames, masks) with ``first``'s target masks before ``cut`` and none after it (the
        second clip's target is the evidence of another class).
    """
    frames = np.concatenate([first[0][:cut], second[0][cut:]])
    masks = np.concatenate([first[1][:cut], np.zeros_like(second[1][cut:])])
    return frames, masks


def sample_composed(rng: np.random.Generator, label: int, size: int = 128,
                    num_frames: int = 16, camera_pan: bool = False, pan_fraction: float = 0.5,
                    decoy_fraction: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray, int, dict[str, bool]]:
    """A composed clip: the first half of a clip of ``label``, the second of another class.

    Both parts are ordinary clips (:func:`sample_clip_params`), each panning with probability
    ``pan_fraction`` (with ``camera_pan``) and having a decoy with ``decoy_fraction``.

    Returns:
        (frames, target masks (only in the first T // 2 frames), the other class,
        {"camera_pan", "decoy"} of the first part).
    """
    other = (label + int(rng.integers(1, len(CLASS_NAMES)))) % len(CLASS_NAMES)
    parts, flags = [], {}
    for part_label in (label, other):
        pan = camera_pan and bool(rng.random() < pan_fraction)
        decoy = bool(rng.random() < decoy_fraction)
        parts.append(render_clip(sample_clip_params(rng, part_label, size, num_frames,
                                                    camera_pan=pan, decoy=decoy)))
        flags = flags or {"camera_pan": pan, "decoy": decoy}
    frames, masks = compose_clips(parts[0], parts[1], num_frames // 2)
    return frames, masks, other, flags


# ----------------------------------------------------------------------------- speed sweep

DEFORMS = ("none", "pulse", "ellipse", "walker")
SPEEDS = (0.02, 0.04, 0.06, 0.08)  # default --speeds, fractions of the frame per frame
PULSE_AMPLITUDE = 0.35  # "pulse": the radius swings between 0.65 and 1.35 of its mean
PULSE_PERIOD = (5.0, 8.0)  # frames
ELLIPSE_ASPECT = 0.45  # "ellipse": minor / major axis, same area as the disc
ELLIPSE_SPIN = (0.15, 0.3)  # rad per frame, either sense


def speed_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """The generator of speed-sweep clip ``index`` of class ``label``.

    The stream does not depend on the speed or the deformation: clip ``index`` of a class has
    the same background, distractors, radius, pan heading and relative position in every bin
    of the sweep, only its speed and deformation differ (streams independent of
    :func:`clip_rng`'s and :func:`temporal_rng`'s)."""
    return np.random.default_rng(np.random.SeedSequence([seed, label, index, 3]))


def sample_speed_params(rng: np.random.Generator, label: int, speed: float, size: int = 128,
                        num_frames: int = 16, camera_pan: bool = False, decoy: bool = False,
                        deform: str = "none") -> ClipParams:
    """A clip whose target moves at exactly ``speed`` (fraction of the frame per frame).

    The target is the red disc of :func:`sample_clip_params` (same radius range), moving in the
    class direction at ``speed * size`` px per frame in the world; with ``camera_pan`` the
    camera moves at 20-35 % of that speed in a random direction. Its position is drawn in view
    coordinates so that its whole trajectory stays fully in view when it fits (travel ``(T - 1)
    * |view velocity|`` at most the frame minus the diameter); otherwise it is centred on that
    axis, in view at the middle frames, and leaves the frame at both ends (null boxes).
    ``deform``: ``none`` (rigid disc), ``pulse`` (radius ``r (1 + 0.35 sin(2 pi t / P +
    phi))``, P 5-8 frames), ``ellipse`` (an ellipse of the disc's area, axes 0.45 apart,
    spinning 0.15-0.3 rad per frame) or ``walker`` (the articulated stick figure of
    :func:`walker_mask`, half height 1.5 r, its gait's period :func:`walker_period` of the
    speed, phase phi). The draws are the same whatever ``speed`` and ``deform`` (see
    :func:`speed_rng`).

    Args:
        rng: source of randomness (consumed).
        label: class index.
        speed: world speed of the target, fraction of ``size`` per frame (> 0).
        size: frame side in pixels.
        num_frames: number of frames T.
        camera_pan: whether the camera moves.
        decoy: whether one distractor is a same-coloured decoy.
        deform: one of :data:`DEFORMS`.
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not in 0..{len(CLASS_NAMES) - 1}")
    if deform not in DEFORMS:
        raise ValueError(f"unknown deformation {deform!r}; use one of {DEFORMS}")
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    radius = rng.uniform(*TARGET_RADIUS) * size
    period = rng.uniform(*PULSE_PERIOD)
    phase = rng.uniform(0, 2 * math.pi)
    spin = rng.uniform(*ELLIPSE_SPIN) * (1 if rng.random() < 0.5 else -1)
    heading = rng.uniform(0, 2 * math.pi)
    pan = rng.uniform(*PAN_SPEED)
    place = rng.uniform(size=2)
    dx, dy = CLASS_DIRECTIONS[label]
    velocity = np.array([dx, dy], dtype=np.float64) * speed * size
    camera = (pan * speed * size * np.array([math.cos(heading), math.sin(heading)])
              if camera_pan else np.zeros(2))
    extent = radius * (1 + PULSE_AMPLITUDE if deform == "pulse" else 1.0)
    if deform == "ellipse":
        extent = radius / math.sqrt(ELLIPSE_ASPECT)
    if deform == "walker":
        radius *= WALKER_SCALE
        extent = radius * WALKER_EXTENT
    # View coordinates, 1 px of slack for the rounded camera offsets (as the temporal split).
    half = (num_frames - 1) / 2
    lo, hi = extent + 1, size - 2 - extent
    view_mid = np.empty(2)
    for k in range(2):
        margin = abs(velocity[k] - camera[k]) * half
        view_mid[k] = (lo + margin + place[k] * (hi - lo - 2 * margin)
                       if lo + margin <= hi - margin else (lo + hi) / 2)
    walker = deform == "walker"
    target = ObjectTrack(
        "walker" if walker else TARGET_SHAPE, _jitter_colour(rng, TARGET_COLOUR), float(radius),
        (float(view_mid[0]), float(view_mid[1])), (float(velocity[0]), float(velocity[1])),
        angle=float(phase), spin=float(spin) if deform == "ellipse" else 0.0,
        aspect=ELLIPSE_ASPECT if deform == "ellipse" else 1.0,
        pulse=PULSE_AMPLITUDE if deform == "pulse" else 0.0,
        pulse_period=walker_period(radius, speed * size) if walker else float(period),
        pulse_phase=float(phase), swing=WALKER_SWING if walker else 0.0)
    distractors = tuple(_sample_distractor(rng, size, decoy=decoy and k == 0)
                        for k in range(int(rng.integers(1, 4))))
    seeds = rng.integers(0, 2**31 - 1, size=2)
    return ClipParams(label, size, num_frames, target, distractors,
                      (float(camera[0]), float(camera[1])), int(seeds[0]), int(seeds[1]))


def speed_bin(speed: float, deform: str) -> str:
    """The name of a sweep bin, e.g. ``none_0.040`` (also its videos' folder)."""
    return f"{deform}_{speed:.3f}"


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
                     decoy_fraction: float = 0.0, target_shape: str = TARGET_SHAPE
                     ) -> dict[str, int]:
    """Render and write the whole dataset under ``out`` (layout in the module docstring).

    Clip ``i`` of each class is in the test split when ``i >= per_class - n_test`` with
    ``n_test = round(per_class * test_fraction)``. With ``camera_pan`` a clip pans with
    probability ``pan_fraction``; a clip has a same-coloured decoy with probability
    ``decoy_fraction``. ``target_shape`` ``walker`` writes it into every row (``"target_shape"``);
    the disc's rows have no such field (byte-identical to the datasets made before it).

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
            params = sample_clip_params(rng, label, size, num_frames, camera_pan=pan, decoy=decoy,
                                        target_shape=target_shape)
            frames, masks = render_clip(params)
            rel = f"videos/{name}/{name}_{index:03d}.avi"
            write_video(out / rel, frames, fps)
            boxes = boxes_from_masks(masks)
            split = "test" if index >= per_class - n_test else "train"
            row = {"video": rel, "label": label, "start_frame": 0, "boxes": boxes,
                   "camera_pan": pan, "decoy": decoy}
            if target_shape != TARGET_SHAPE:
                row["target_shape"] = target_shape
            records[split].append(json.dumps(row))
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


def generate_temporal_split(out: Path, seed: int = 0, temporal_per_class: int = 0,
                            composed_per_class: int = 0, size: int = 128, num_frames: int = 16,
                            motion_frames: int | None = None, range_starts: str = "halves",
                            camera_pan: bool = False, pan_fraction: float = 0.5,
                            decoy_fraction: float = 0.0, fps: float = 25.0) -> dict[str, int]:
    """Render and write the temporal split ``out/temporal.jsonl`` (module docstring).

    ``temporal_per_class`` clips per class whose motion occupies ``motion_frames`` frames
    (default T // 2; :func:`sample_motion_range` with ``range_starts``,
    :func:`sample_temporal_params`), then ``composed_per_class`` composed clips per class
    (:func:`sample_composed`, range ``[0, T // 2)``). Pans and decoys as
    :func:`generate_dataset`. Writes nothing of the train / test splits.

    Returns:
        Counts: ``{"temporal", "composed", "panned", "decoys"}``.
    """
    motion_frames = num_frames // 2 if motion_frames is None else motion_frames
    rows: list[str] = []
    paths: list[str] = []
    counts = {"temporal": 0, "composed": 0, "panned": 0, "decoys": 0}
    for kind, per_class in (("temporal", temporal_per_class), ("composed", composed_per_class)):
        for label, name in enumerate(CLASS_NAMES):
            for index in range(per_class):
                rng = temporal_rng(seed, kind, label, index)
                extra: dict[str, object]
                if kind == "temporal":
                    pan = camera_pan and bool(rng.random() < pan_fraction)
                    decoy = bool(rng.random() < decoy_fraction)
                    frame_range = sample_motion_range(rng, num_frames, motion_frames,
                                                      range_starts)
                    params, onset, offset = sample_temporal_params(
                        rng, label, frame_range, size, num_frames, camera_pan=pan, decoy=decoy)
                    frames, masks = render_clip(params)
                    extra = {"onset": onset, "offset": offset}
                else:
                    frames, masks, other, flags = sample_composed(
                        rng, label, size, num_frames, camera_pan, pan_fraction, decoy_fraction)
                    pan, decoy = flags["camera_pan"], flags["decoy"]
                    frame_range = (0, num_frames // 2)
                    extra = {"second_label": other}
                rel = f"videos/{kind}/{name}/{name}_{index:03d}.avi"
                write_video(out / rel, frames, fps)
                rows.append(json.dumps(
                    {"video": rel, "label": label, "start_frame": 0,
                     "boxes": range_boxes(masks, frame_range),
                     "frame_range": list(frame_range), "kind": kind, "camera_pan": pan,
                     "decoy": decoy, **extra}))
                paths.append(rel)
                counts[kind] += 1
                counts["panned"] += int(pan)
                counts["decoys"] += int(decoy)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (out / "splits" / "temporal.txt").write_text("".join(p + "\n" for p in paths))
    (out / "temporal.jsonl").write_text("".join(r + "\n" for r in rows))
    return counts


def generate_speed_split(out: Path, seed: int = 0, per_class: int = 0,
                         speeds: Sequence[float] = SPEEDS, deforms: Sequence[str] = ("none",),
                         size: int = 128, num_frames: int = 16, camera_pan: bool = False,
                         pan_fraction: float = 0.5, decoy_fraction: float = 0.0,
                         fps: float = 25.0) -> dict[str, int]:
    """Render and write the speed sweep ``out/speed.jsonl`` (module docstring).

    ``per_class`` clips per class in each bin (speed, deformation), :func:`sample_speed_params`
    with the stream of :func:`speed_rng`: clip ``index`` of a class is the same scene in every
    bin. Pans and decoys as :func:`generate_dataset`. Writes nothing of the other splits.

    Returns:
        Counts: ``{"clips", "bins", "panned", "decoys", "null_boxes"}``.
    """
    rows: list[str] = []
    paths: list[str] = []
    counts = {"clips": 0, "bins": 0, "panned": 0, "decoys": 0, "null_boxes": 0}
    for deform in deforms:
        for speed in speeds:
            counts["bins"] += 1
            for label, name in enumerate(CLASS_NAMES):
                for index in range(per_class):
                    rng = speed_rng(seed, label, index)
                    pan = camera_pan and bool(rng.random() < pan_fraction)
                    decoy = bool(rng.random() < decoy_fraction)
                    params = sample_speed_params(rng, label, speed, size, num_frames, pan,
                                                 decoy, deform)
                    frames, masks = render_clip(params)
                    rel = f"videos/speed/{speed_bin(speed, deform)}/{name}/{name}_{index:03d}.avi"
                    write_video(out / rel, frames, fps)
                    boxes = boxes_from_masks(masks)
                    rows.append(json.dumps(
                        {"video": rel, "label": label, "start_frame": 0, "boxes": boxes,
                         "kind": "speed", "speed": speed, "deform": deform,
                         "camera_pan": pan, "decoy": decoy}))
                    paths.append(rel)
                    counts["clips"] += 1
                    counts["panned"] += int(pan)
                    counts["decoys"] += int(decoy)
                    counts["null_boxes"] += sum(box is None for box in boxes)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (out / "splits" / "speed.txt").write_text("".join(p + "\n" for p in paths))
    (out / "speed.jsonl").write_text("".join(r + "\n" for r in rows))
    return counts


def _floats(text: str) -> tuple[float, ...]:
    """``--speeds``: a comma list of positive numbers."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of numbers: {text!r}") from None
    if not values or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"need speeds > 0, got {text!r}")
    return values


def _deforms(text: str) -> tuple[str, ...]:
    """``--deforms``: a comma list of :data:`DEFORMS`."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values or not set(values) <= set(DEFORMS):
        raise argparse.ArgumentTypeError(f"deformations are {', '.join(DEFORMS)}, got {text!r}")
    return values


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
    parser.add_argument("--target-shape", choices=TARGET_SHAPES, default=TARGET_SHAPE,
                        help="the target of the train / test clips: the red disc, or an "
                             "articulated walking stick figure (a network trained on the disc "
                             "does not recognise it: train one on these)")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--temporal", type=int, default=0, metavar="N",
                        help="clips per class of the temporal split whose motion occupies only "
                             "a known frame range (DIR/temporal.jsonl)")
    parser.add_argument("--composed", type=int, default=0, metavar="N",
                        help="composed clips per class of the temporal split: the first half "
                             "of a clip of the label, the second half of another class")
    parser.add_argument("--motion-frames", type=int, default=None, metavar="L",
                        help="frames of target motion in --temporal clips (default: frames/2)")
    parser.add_argument("--range-starts", choices=RANGE_STARTS, default="halves",
                        help="where --temporal motion lies: at the start or the end of the "
                             "clip (halves) or anywhere (any)")
    parser.add_argument("--speed-sweep", type=int, default=0, metavar="N",
                        help="clips per class per bin of the speed sweep: the target moves at "
                             "each of --speeds, rigid or deforming (DIR/speed.jsonl)")
    parser.add_argument("--speeds", type=_floats, default=SPEEDS, metavar="S,S,...",
                        help="target speeds of --speed-sweep, fractions of the frame per frame "
                             "(default: 0.02,0.04,0.06,0.08)")
    parser.add_argument("--deforms", type=_deforms, default=("none",), metavar="D,D,...",
                        help=f"target deformations of --speed-sweep, of {', '.join(DEFORMS)} "
                             "(default: none)")
    args = parser.parse_args(argv)
    temporal = args.temporal > 0 or args.composed > 0 or args.speed_sweep > 0
    if args.temporal < 0 or args.composed < 0 or args.speed_sweep < 0:
        parser.error("--temporal, --composed and --speed-sweep must be >= 0")
    if (args.per_class < (0 if temporal else 1)) or args.size < 16 or args.frames < 2:
        parser.error("need --per-class >= 1, --size >= 16 and --frames >= 2")
    motion = args.frames // 2 if args.motion_frames is None else args.motion_frames
    if args.temporal > 0 and not 2 <= motion <= args.frames:
        parser.error(f"--motion-frames must be in [2, --frames], got {motion}")
    if not all(0.0 <= f <= 1.0 for f in (args.test_fraction, args.pan_fraction,
                                          args.decoy_fraction)):
        parser.error("--test-fraction, --pan-fraction and --decoy-fraction must be in [0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.per_class > 0:
        counts = generate_dataset(args.out, args.seed, args.per_class, args.size, args.frames,
                                  args.camera_pan, args.pan_fraction, args.test_fraction,
                                  args.fps, args.decoy_fraction, args.target_shape)
        print(f"wrote {counts['train']} train + {counts['test']} test clips to {args.out} "
              f"({counts['panned']} panned, {counts['decoys']} with a decoy, "
              f"{counts['null_boxes']} null boxes)")
    if args.temporal > 0 or args.composed > 0:
        counts = generate_temporal_split(
            args.out, args.seed, args.temporal, args.composed, args.size, args.frames,
            args.motion_frames, args.range_starts, args.camera_pan, args.pan_fraction,
            args.decoy_fraction, args.fps)
        print(f"wrote {counts['temporal']} temporal + {counts['composed']} composed clips to "
              f"{args.out / 'temporal.jsonl'} ({counts['panned']} panned, {counts['decoys']} "
              "with a decoy)")
    if args.speed_sweep > 0:
        counts = generate_speed_split(
            args.out, args.seed, args.speed_sweep, args.speeds, args.deforms, args.size,
            args.frames, args.camera_pan, args.pan_fraction, args.decoy_fraction, args.fps)
        print(f"wrote {counts['clips']} clips in {counts['bins']} speed bins to "
              f"{args.out / 'speed.jsonl'} ({counts['panned']} panned, {counts['decoys']} with a "
              f"decoy, {counts['null_boxes']} null boxes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
