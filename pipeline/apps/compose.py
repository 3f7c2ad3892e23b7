"""Compose a real 16-frame clip from two real videos (8 + 8 frames): a temporal ground truth.

STEP's "Cat" protocol on real footage: the first 8 frames come from one video, the last 8 from
another. The truth is *measured*, not assumed (a composite's predicted class often needs both
halves): the command decodes the written clip exactly as the pipeline will, scores it with I3D
(``i3d_kinetics400``, 16 × 224 × 224) as it is, with the first half blanked and with the second
half blanked (3 forwards; blanked = the fill AOSA occludes with, 0 in normalised space), and
picks as the class to explain the most probable of the composite's top ``--candidates`` classes
that needs only the first half: blanking the first half leaves at most ``--max-left`` of its
probability, and blanking the second half keeps at least ``--min-kept``. ``--target NAME``
fixes the class instead (its numbers are still reported).

Writes ``OUT/composed.avi`` (16 frames, 256 × 256 MJPG at 25 fps: each part is resized to a
short side of 256 and centre-cropped, so I3D's 256 → 224 centre crop sees the same pixels as
it does on the source videos) and ``OUT/composed.jsonl``, one row::

    {"video": "composed.avi", "label": "<class name>", "start_frame": 0, "frame_range": [0, 8],
     "first": ..., "second": ..., "p": ..., "p_blank_range": ..., "p_blank_rest": ...}

``label`` is the fixed class to explain (run the pipeline with ``--target label``) and
``frame_range`` the frames it needs (video frames, end exclusive). Videos are the demo footage
(``vtest``, ``tree``, ``walking``: :mod:`pipeline.apps.demo_data`, fetched once into the
cache) or any video path, each with its first frame as ``NAME:START``. Usage::

    python -m pipeline.apps.compose --out composed_out            # vtest:400 then tree:30
    python run_pipeline.py --input composed_out/composed.jsonl --output composed_out/run \\
        --model i3d_kinetics400 --target label --methods aosa,aosa_t --stride 16 \\
        --box-size 32 --precision bf16

The truth is measured on the written file (after MJPG re-encoding), the one the pipeline
reads. What the defaults give: docs/EVALUATION.md, "On real footage with I3D".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.apps.synth import write_video
from transforms.decode import ClipError, decode_clip

MODEL = "i3d_kinetics400"
HALF = 8  # frames from each video
SIDE = 256  # written frame side: I3D's resize (224 · 256/224) then its 224 centre crop
DEFAULT_FIRST = "vtest:400"
DEFAULT_SECOND = "tree:30"


@dataclass(frozen=True)
class Blanking:
    """Probabilities of one class: the composite, first half blanked, second half blanked."""

    name: str
    p: float
    p_blank_first: float
    p_blank_second: float

    def needs_only_first(self, max_left: float, min_kept: float) -> bool:
        """Blanking the first half leaves <= ``max_left`` · p and blanking the second keeps
        >= ``min_kept`` · p."""
        return (self.p > 0 and self.p_blank_first <= max_left * self.p
                and self.p_blank_second >= min_kept * self.p)


def parse_part(spec: str, videos: dict[str, Path] | None) -> tuple[str, int]:
    """``NAME:START`` → (video path, first frame); NAME is a demo video or a path."""
    name, sep, start = spec.rpartition(":")
    if not sep or not start.isdigit():
        raise ValueError(f"expected NAME:START (e.g. vtest:400), got {spec!r}")
    if videos is not None and name in videos:
        return str(videos[name]), int(start)
    return name, int(start)


def compose_frames(first: tuple[str, int], second: tuple[str, int]) -> np.ndarray:
    """uint8 (16, 256, 256, 3): 8 frames of each video, short side 256, centre-cropped."""
    parts = [decode_clip(path, start, HALF, SIDE).frames for path, start in (first, second)]
    return np.concatenate(parts)


def blanked_probs(scorer, frames: np.ndarray, masks: Sequence[np.ndarray], fill: str = "mean",
                  sigma: float = 0.0) -> np.ndarray:
    """float (1 + M, C) class probabilities: the clip, then the clip with each mask blanked.

    Args:
        scorer: a :class:`~transforms.scoring.Scorer`.
        frames: uint8 (T, H, W, 3), the clip as the network sees it.
        masks: M bool (T, H, W) masks of the voxels to blank.
        fill: ``mean`` (0 in normalised space: the network's mean colour, AOSA's occluder) or
            ``blur`` (the clip blurred in space with Gaussian ``sigma`` px).
    """
    from transforms.perturbation import blur_fill

    x = scorer.to_input(frames)                                  # (3, T, H, W)
    if fill == "mean":
        filler = torch.zeros_like(x)
    elif fill == "blur":
        filler = blur_fill(x, sigma)
    else:
        raise ValueError(f"blanking fill must be mean or blur, got {fill!r}")
    batch = [x]
    for mask in masks:
        m = torch.from_numpy(np.ascontiguousarray(mask)).to(x.device, x.dtype).unsqueeze(0)
        batch.append(x * (1 - m) + filler * m)
    with torch.inference_mode():
        return scorer.probs(torch.stack(batch)).float().cpu().numpy()


def truth_probs(scorer, frames: np.ndarray, truth: np.ndarray, fill: str = "mean",
                sigma: float = 0.0) -> np.ndarray:
    """float (3, C) class probabilities: the clip, the truth blanked, everything else blanked
    (:func:`blanked_probs`; ``truth``: bool (T, H, W), the voxels of the evidence)."""
    return blanked_probs(scorer, frames, [truth, ~truth], fill, sigma)


def blanking_probs(scorer, frames: np.ndarray) -> np.ndarray:
    """float (3, C) class probabilities: the clip, first half blanked, second half blanked."""
    truth = np.zeros(frames.shape[:3], dtype=bool)
    truth[:HALF] = True
    return truth_probs(scorer, frames, truth)


def choose_target(probs: np.ndarray, names: Sequence[str], candidates: int, max_left: float,
                  min_kept: float, target: str | None = None) -> tuple[Blanking | None,
                                                                      list[Blanking]]:
    """The class to explain and the top-``candidates`` classes' numbers.

    Returns:
        (the fixed ``target``'s or the most probable candidate needing only the first half,
        or None when none does; the candidates, most probable first).
    """
    def row(c: int) -> Blanking:
        return Blanking(names[c], float(probs[0, c]), float(probs[1, c]), float(probs[2, c]))

    top = [row(int(c)) for c in np.argsort(-probs[0])[:candidates]]
    if target is not None:
        if target not in names:
            raise ValueError(f"unknown class {target!r} for {MODEL}")
        return row(list(names).index(target)), top
    chosen = [b for b in top if b.needs_only_first(max_left, min_kept)]
    return (chosen[0] if chosen else None), top


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline.apps.compose", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--first", default=DEFAULT_FIRST,
                    help="NAME:START of the first 8 frames (demo video name or path)")
    ap.add_argument("--second", default=DEFAULT_SECOND, help="NAME:START of the last 8 frames")
    ap.add_argument("--target", default=None, help="class name to explain (default: chosen)")
    ap.add_argument("--candidates", type=int, default=10,
                    help="how many of the composite's top classes may be chosen")
    ap.add_argument("--max-left", type=float, default=0.1,
                    help="blanking the first half leaves at most this share of p")
    ap.add_argument("--min-kept", type=float, default=0.8,
                    help="blanking the second half keeps at least this share of p")
    ap.add_argument("--precision", default=None, help="fp32 | bf16 (default: bf16 where the "
                    "CPU has it)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from models.i3d_weights import WeightsUnavailable, resolve_cache_dir
    from pipeline.apps.demo import cpu_has_bf16
    from pipeline.apps.demo_data import DemoDataUnavailable, fetch_demo_videos
    from transforms.model_handler import ModelConfig, VideoModelHandler

    try:
        videos = fetch_demo_videos(resolve_cache_dir())
        first, second = parse_part(args.first, videos), parse_part(args.second, videos)
        frames = compose_frames(first, second)
        precision = args.precision or ("bf16" if cpu_has_bf16() else "fp32")
        scorer = VideoModelHandler(ModelConfig(MODEL), "cpu", precision).load_model()
    except (DemoDataUnavailable, WeightsUnavailable, ClipError, ValueError) as exc:
        print(f"compose: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    video = args.out / "composed.avi"
    write_video(video, frames, fps=25.0)
    # Score what the pipeline will see: the written file through the pipeline's decoder.
    spec = scorer.spec
    seen = decode_clip(str(video), 0, 2 * HALF, spec.input_size, spec.resize_ratio).frames
    probs = blanking_probs(scorer, seen)
    try:
        chosen, top = choose_target(probs, scorer.class_names, args.candidates, args.max_left,
                                    args.min_kept, args.target)
    except ValueError as exc:
        print(f"compose: {exc}", file=sys.stderr)
        return 1
    print(f"{'class':<36} {'p':>6} {'blank 1st half':>15} {'blank 2nd half':>15}")
    for b in top:
        print(f"{b.name:<36} {b.p:>6.3f} {b.p_blank_first:>15.3f} {b.p_blank_second:>15.3f}")
    if chosen is None:
        print(f"compose: none of the top {args.candidates} classes needs only the first half; "
              "try other --first / --second clips, or give --target", file=sys.stderr)
        return 1
    row = {"video": video.name, "label": chosen.name, "start_frame": 0,
           "frame_range": [0, HALF], "first": f"{Path(first[0]).name}:{first[1]}",
           "second": f"{Path(second[0]).name}:{second[1]}", "precision": precision,
           "p": round(chosen.p, 4), "p_blank_range": round(chosen.p_blank_first, 4),
           "p_blank_rest": round(chosen.p_blank_second, 4)}
    (args.out / "composed.jsonl").write_text(json.dumps(row) + "\n")
    print(f"\ntarget {chosen.name!r}: p {chosen.p:.3f}; blanking frames 0-7 leaves "
          f"{chosen.p_blank_first:.3f}, blanking frames 8-15 leaves {chosen.p_blank_second:.3f}"
          f"\nwrote {video} and {args.out / 'composed.jsonl'} (frame_range [0, {HALF}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
