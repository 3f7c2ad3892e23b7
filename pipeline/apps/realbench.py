"""A real-footage ground-truth benchmark: composites of real clips whose truth is verified.

    python -m pipeline.apps.realbench --out realbench_out [--seed 0] [--per-kind 16]

Each composite puts a 16-frame *evidence* segment of one real video into another video (the
*background*, always from a different source), in one of four kinds:

- ``paste``: the evidence, resized to a random square of ``--paste-scale`` × the network's
  crop side, at a random position over the moving background;
- ``paste_still``: the same over a still frame of the background (its first frame, repeated);
- ``side``: side by side, the evidence in a column of random width (``--split`` × the crop
  side) on a random side, the background in the rest;
- ``temporal``: the evidence's first frames in a random range ``[a, b)`` of random length
  (``--range-len``), the background's frames elsewhere; the range starts anywhere
  (``--range-starts any``) or opens or closes the clip (``halves``: ``a`` = 0 or 16 − length,
  each with probability 1/2; with ``--range-len 8,8`` the first or the second half).

The network is I3D (``i3d_kinetics400``) unless ``--model`` names another registered network
or your own (``package.module:factory`` with ``--checkpoint``, ``--size``, ``--num-frames`` 16,
``--class-names``...: the pipeline's own options, declared once in :mod:`pipeline.flags`), so
that a benchmark's truth is verified with the network it will explain. The composites are
written at 256 × 256 px; the evidence is placed inside the part of the frame the network sees
after its resize and centre crop (the central 224 px for I3D's 256 → 224, the whole frame for
a network without a crop margin).

The class to explain is fixed per composite: the evidence segment's top class as the network
recognises it *on its own* (its probability ``p_alone`` is recorded; segments below
``--min-alone`` are not used). The truth (the evidence's box in every frame, or its frame
range) is kept only when the network is shown to use it: the composite is written, decoded as
the pipeline decodes it, and scored clean, with the truth blanked and with everything else
blanked (3 forwards, fill ``--fill``: ``mean`` = the network's mean colour, 0 in normalised
space, AOSA's occluder; or ``blur``). A composite is kept when

- p (clean) >= ``--min-p``,
- p with the truth blanked <= ``--max-left`` × p (the evidence is needed), and
- p with the rest blanked >= ``--min-kept`` × p (the evidence suffices).

Writes into ``OUT``:

- ``realbench.jsonl``: the kept composites, in the pipeline's manifest format (``video``,
  ``label`` = the fixed class name, ``start_frame`` 0, and ``boxes``, one ``[x0, y0, x1, y1]``
  per frame in the written video's pixels, for the spatial kinds, or ``frame_range`` for the
  temporal kind), plus ``kind`` and the blanking numbers;
- ``evidence.jsonl``: every candidate, kept or rejected, with p alone, p clean, p with the
  truth blanked, p with the rest blanked, and the reasons of a rejection;
- ``summary.json``: the network (its options, so that ``--summarise`` reads the truth as that
  network sees it), the settings, the sources, kept / rejected counts per kind and reason, and
  the generator's wall time;
- ``videos/``: the kept composites (16 frames, 256 × 256 MJPG: I3D's 256 → 224 centre crop
  sees the central 224 × 224, where all evidence is placed).

Sources: the footage catalogue of :mod:`pipeline.apps.footage` (real videos shipped in
packages on the registries), up to ``--segments`` 16-frame segments of each
(:func:`pipeline.apps.footage.clip_starts`); the evidence source is drawn uniformly among the
sources with a usable segment, then one of its segments.
Explain the kept composites with::

    python run_pipeline.py --input OUT/realbench.jsonl --output OUT/run --model i3d_kinetics400 \\
        --target label --precision bf16 --methods gradcam,aosa_approx,random
    python run_pipeline.py report --output OUT/run          # intervals, paired tests
    python -m pipeline.apps.realbench --out OUT --summarise OUT/run   # + mass in the truth

The summary adds what the report does not show: the share of each map's above-median mass
inside the truth (the box in every frame, or the frame range), per kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from pipeline.apps.compose import MODEL, SIDE, truth_probs
from pipeline.apps.footage import clip_starts
from pipeline.apps.synth import RANGE_STARTS, sample_motion_range, write_video
from pipeline.config import declared_options
from pipeline.flags import add_arguments
from transforms.decode import ClipError, clip_boxes, decode_clip, video_frame_count
from transforms.metrics import box_oracle_map
from transforms.temporal import above_median_share_in

FRAMES = 16          # the network's clip length (I3D: 16 × 224 × 224)
# The pipeline's options that say which network explains the clips (pipeline.flags).
NETWORK_OPTIONS = ("model", "checkpoint", "num_classes", "num_frames", "size", "mean", "std",
                   "class_names", "cache_dir")
KINDS = ("paste", "paste_still", "side", "temporal")
Box = list[int]


@dataclass(frozen=True)
class Settings:
    """The generator's options (see the module docstring)."""

    seed: int = 0
    per_kind: int = 16
    kinds: tuple[str, ...] = KINDS
    max_tries: int = 50
    segments: int = 6
    min_alone: float = 0.3
    min_p: float = 0.05
    max_left: float = 0.2
    min_kept: float = 0.8
    fill: str = "mean"
    fill_sigma: float = 10.0
    paste_scale: tuple[float, float] = (0.6, 0.95)
    split: tuple[float, float] = (0.45, 0.75)
    range_len: tuple[int, int] = (6, 14)
    range_starts: str = "any"
    crop: int = 224   # the side of the SIDE-px frame the network sees (:func:`seen_side`)

    def check(self) -> None:
        """Raises ValueError naming the first bad option."""
        lo, hi = self.range_len
        for ok, msg in (
            (self.per_kind >= 1, f"--per-kind must be >= 1, got {self.per_kind}"),
            (self.max_tries >= self.per_kind, "--max-tries must be >= --per-kind"),
            (self.segments >= 1, f"--segments must be >= 1, got {self.segments}"),
            (all(k in KINDS for k in self.kinds), f"--kinds must be among {', '.join(KINDS)}"),
            (0 < self.max_left < self.min_kept, "need 0 < --max-left < --min-kept"),
            (self.fill in ("mean", "blur"), f"--fill must be mean or blur, got {self.fill!r}"),
            (0 < self.paste_scale[0] <= self.paste_scale[1] <= 1,
             "--paste-scale must be LO,HI with 0 < LO <= HI <= 1"),
            (0 < self.split[0] <= self.split[1] < 1, "--split must be LO,HI with 0 < LO <= HI < 1"),
            (2 <= lo <= hi < FRAMES, f"--range-len must be LO,HI with 2 <= LO <= HI < {FRAMES}"),
            (self.range_starts in RANGE_STARTS,
             f"--range-starts must be one of {', '.join(RANGE_STARTS)}, got {self.range_starts!r}"),
        ):
            if not ok:
                raise ValueError(msg)


@dataclass(frozen=True)
class Segment:
    """A 16-frame segment of a source video and the network's view of it alone."""

    source: str
    start: int
    label: str
    p_alone: float

    @property
    def name(self) -> str:
        return f"{self.source}:{self.start}"


# ----------------------------------------------------------------------------- composition

def seen_side(spec) -> int:
    """The side, in SIDE-px frame pixels, of the frame's centre part the network sees: it
    resizes the frame to ``round(size · resize_ratio)`` and crops the central ``size``
    (I3D: 256 → 256, crop 224: 224; a 112-px network with the same ratio: 256 → 128, crop 112:
    224 again; a network without a margin: the whole 256)."""
    resized = round(spec.input_size * spec.resize_ratio)
    return SIDE * spec.input_size // resized


def margin(crop: int) -> int:
    """Offset of the network's centre crop inside the SIDE-px frame."""
    return (SIDE - crop) // 2


def paste(evidence: np.ndarray, background: np.ndarray, side: int, x0: int, y0: int
          ) -> tuple[np.ndarray, Box]:
    """The evidence resized to ``side × side`` with its top-left corner at (x0, y0).

    Args:
        evidence, background: uint8 (T, S, S, 3).

    Returns:
        (uint8 (T, S, S, 3), the box ``[x0, y0, x0 + side, y0 + side]`` in frame pixels).
    """
    out = background.copy()
    for t, frame in enumerate(evidence):
        out[t, y0:y0 + side, x0:x0 + side] = cv2.resize(frame, (side, side),
                                                        interpolation=cv2.INTER_AREA)
    return out, [x0, y0, x0 + side, y0 + side]


def side_by_side(evidence: np.ndarray, background: np.ndarray, width: int, left: bool,
                 crop: int) -> tuple[np.ndarray, Box]:
    """The evidence's central columns in a ``width``-px column at the left or right edge of the
    network's crop (extended to the frame's edge), the background elsewhere.

    Args:
        evidence, background: uint8 (T, S, S, 3).

    Returns:
        (uint8 (T, S, S, 3), the column's box inside the crop, in frame pixels).
    """
    s, m = evidence.shape[2], margin(crop)
    out = background.copy()
    cols = (0, m + width) if left else (m + crop - width, s)
    w = cols[1] - cols[0]
    src = (s - w) // 2
    out[:, :, cols[0]:cols[1]] = evidence[:, :, src:src + w]
    box = [m, m, m + width, m + crop] if left else [m + crop - width, m, m + crop, m + crop]
    return out, box


def in_time(evidence: np.ndarray, background: np.ndarray, a: int, b: int) -> np.ndarray:
    """The background's frames with frames ``[a, b)`` replaced by the evidence's first ``b - a``.

    Args:
        evidence, background: uint8 (T, S, S, 3).
    """
    out = background.copy()
    out[a:b] = evidence[:b - a]
    return out


def still(clip: np.ndarray) -> np.ndarray:
    """uint8 (T, S, S, 3): the first frame repeated T times."""
    return np.repeat(clip[:1], clip.shape[0], axis=0)


def sample_composite(rng: np.random.Generator, kind: str, evidence: np.ndarray,
                     background: np.ndarray, settings: Settings
                     ) -> tuple[np.ndarray, Box | None, tuple[int, int] | None, dict]:
    """One composite of ``kind`` with random geometry.

    Returns:
        (uint8 (T, S, S, 3) frames, the box of every frame or None, the frame range or None,
        the geometry drawn).
    """
    crop, m = settings.crop, margin(settings.crop)
    if kind in ("paste", "paste_still"):
        side = int(round(rng.uniform(*settings.paste_scale) * crop))
        x0, y0 = (m + int(rng.integers(0, crop - side + 1)) for _ in range(2))
        bg = still(background) if kind == "paste_still" else background
        frames, box = paste(evidence, bg, side, x0, y0)
        return frames, box, None, {"side": side, "x0": x0, "y0": y0}
    if kind == "side":
        width = int(round(rng.uniform(*settings.split) * crop))
        left = bool(rng.integers(0, 2))
        frames, box = side_by_side(evidence, background, width, left, crop)
        return frames, box, None, {"width": width, "left": left}
    if kind == "temporal":
        length = int(rng.integers(settings.range_len[0], settings.range_len[1] + 1))
        a, b = sample_motion_range(rng, FRAMES, length, settings.range_starts)
        return in_time(evidence, background, a, b), None, (a, b), {}
    raise ValueError(f"unknown composite kind {kind!r}")


def rejection(p: float, p_truth: float, p_rest: float, settings: Settings) -> list[str]:
    """Why a composite's truth is not verified (empty: kept); an unrecognised composite
    (p < ``min_p``) has only that reason (its blanked versions are not scored)."""
    reasons = []
    if p < settings.min_p:
        reasons.append("not recognised")
        return reasons  # the blanked clips are not scored then
    if not p_truth <= settings.max_left * p:
        reasons.append("truth not needed")
    if not p_rest >= settings.min_kept * p:
        reasons.append("truth not sufficient")
    return reasons


# ----------------------------------------------------------------------------- sources

def sources() -> dict[str, Path]:
    """Real videos by name: the footage catalogue of :mod:`pipeline.apps.footage` (fetched once
    into the cache; a source that cannot be fetched is left out with one line on stderr)."""
    from pipeline.apps.footage import default_dest, fetch_all

    return fetch_all(default_dest(), skip_unavailable=True)


def network_view(scorer, path: str, start: int = 0) -> tuple[np.ndarray, object]:
    """uint8 (16, crop, crop, 3) frames as the pipeline decodes them, and the DecodedClip."""
    spec = scorer.spec
    clip = decode_clip(path, start, FRAMES, spec.input_size, spec.resize_ratio)
    return clip.frames, clip


def clean_probs(scorer, frames: np.ndarray) -> np.ndarray:
    """float (C,) class probabilities of uint8 (T, H, W, 3) frames as the network sees them."""
    import torch

    with torch.inference_mode():
        return scorer.probs(scorer.to_input(frames).unsqueeze(0))[0].float().cpu().numpy()


def score_segments(scorer, videos: dict[str, Path], n: int,
                   log: Callable[[str], None] = print) -> tuple[list[Segment], dict]:
    """The network's top class of ``n`` segments of every source, and their SIDE-px frames."""
    segments, frames = [], {}
    for name in sorted(videos):
        path = str(videos[name])
        try:
            # (at least 2 spread starts, so that n = 1 takes the first segment, not the middle)
            starts = clip_starts(video_frame_count(path), FRAMES, FRAMES, max(n, 2))[:n]
        except ClipError as exc:
            log(f"realbench: source {name} skipped: {exc}")
            continue
        for start in starts:
            try:
                seen, _ = network_view(scorer, path, start)
                frames[(name, start)] = decode_clip(path, start, FRAMES, SIDE).frames
            except ClipError as exc:
                log(f"realbench: source {name} segment {start} skipped: {exc}")
                continue
            probs = clean_probs(scorer, seen)
            c = int(probs.argmax())
            segments.append(Segment(name, start, scorer.class_name(c), float(probs[c])))
            log(f"  {name}:{start:<5} {segments[-1].label:<32} p {float(probs[c]):.3f}")
    return segments, frames


# ----------------------------------------------------------------------------- generation

def generate(out: Path, scorer, videos: dict[str, Path], settings: Settings,
             log: Callable[[str], None] = print, network: dict | None = None) -> dict:
    """Write the benchmark into ``out`` (see the module docstring); returns the summary.

    ``network``: the options that built ``scorer`` (``NETWORK_OPTIONS``; default: its registered
    name), recorded in the summary; ``settings.crop`` is replaced by the scorer's :func:`seen_side`.
    """
    settings.check()
    if scorer.spec.num_frames != FRAMES:
        raise ValueError(f"realbench composites are {FRAMES} frames; {scorer.spec.name} takes "
                         f"{scorer.spec.num_frames} (give --num-frames {FRAMES})")
    settings = replace(settings, crop=seen_side(scorer.spec))
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    log(f"scoring {settings.segments} segments of each of {len(videos)} sources ...")
    segments, frames = score_segments(scorer, videos, settings.segments, log)
    evidence = [s for s in segments if s.p_alone >= settings.min_alone]
    names = [scorer.class_name(i) for i in range(scorer.spec.num_classes)]  # or index texts
    if not evidence or len({s.source for s in segments}) < 2:
        raise ValueError(f"need >= 2 sources and a segment with p >= --min-alone "
                         f"{settings.min_alone}: got {len(videos)} sources, "
                         f"{len(evidence)} usable segments")
    usable = sorted({s.source for s in evidence})
    rows, records = [], []
    for k, kind in enumerate(settings.kinds):
        kept = 0
        for i in range(settings.max_tries):
            if kept >= settings.per_kind:
                break
            rng = np.random.default_rng([settings.seed, k, i])
            source = usable[int(rng.integers(len(usable)))]  # sources equally often
            pool = [s for s in evidence if s.source == source]
            ev = pool[int(rng.integers(len(pool)))]
            others = [s for s in segments if s.source != ev.source]
            if not others:
                continue
            bg = others[int(rng.integers(len(others)))]
            comp, box, frame_range, geometry = sample_composite(
                rng, kind, frames[(ev.source, ev.start)], frames[(bg.source, bg.start)],
                settings)
            cid = f"{kind}_{i:03d}"
            video = out / "videos" / f"{cid}.avi"
            write_video(video, comp, fps=25.0)
            seen, clip = network_view(scorer, str(video))
            boxes = None if box is None else [box] * FRAMES
            truth = np.zeros(seen.shape[:3], dtype=bool)
            if boxes is not None:
                crop_boxes = clip_boxes(boxes, clip.frame_indices, clip.source_size,
                                        clip.scale, clip.offset, seen.shape[1])
                truth = box_oracle_map(seen.shape[:3], crop_boxes) > 0
            else:
                truth[frame_range[0]:frame_range[1]] = True
            c = names.index(ev.label)
            p = float(clean_probs(scorer, seen)[c])
            p_truth = p_rest = float("nan")  # not measured when the clip is not recognised
            if p >= settings.min_p:
                probs = truth_probs(scorer, seen, truth, settings.fill, settings.fill_sigma)
                p_truth, p_rest = float(probs[1, c]), float(probs[2, c])
            reasons = rejection(p, p_truth, p_rest, settings)
            record = {"id": cid, "kind": kind, "evidence": ev.name, "background": bg.name,
                      "label": ev.label, "p_alone": round(ev.p_alone, 4), "p": round(p, 4),
                      "p_blank_truth": _rounded(p_truth), "p_blank_rest": _rounded(p_rest),
                      "truth_share": round(float(truth.mean()), 4), "kept": not reasons,
                      "reasons": reasons, **geometry}
            records.append(record)
            log(f"  {cid:<16} {ev.name:<12} over {bg.name:<12} {ev.label[:24]:<24} p {p:.3f} "
                f"truth blanked {_rounded(p_truth)} rest blanked {_rounded(p_rest)}: "
                f"{', '.join(reasons) or 'kept'}")
            if reasons:
                video.unlink()
                continue
            kept += 1
            row = {"video": f"videos/{video.name}", "label": ev.label, "start_frame": 0}
            row.update({"boxes": boxes} if boxes is not None
                       else {"frame_range": list(frame_range)})
            row.update({k2: record[k2] for k2 in ("kind", "evidence", "background", "p",
                                                  "p_blank_truth", "p_blank_rest")})
            rows.append(row)
        log(f"  {kind}: kept {kept} of {sum(r['kind'] == kind for r in records)} tried")
    rows = round_robin(rows)  # a run stopped early has explained every kind alike
    (out / "realbench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "evidence.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {
        "model": scorer.spec.name, "network": network or {"model": scorer.spec.name},
        "weights_sha256": scorer.weights_sha256, "precision": str(scorer.amp_dtype or "fp32"),
        "settings": asdict(settings), "sources": {k: str(v) for k, v in videos.items()},
        "segments": [asdict(s) for s in segments],
        "counts": {kind: {"tried": sum(r["kind"] == kind for r in records),
                          "kept": sum(r["kind"] == kind and r["kept"] for r in records),
                          "rejected": dict(Counter(x for r in records if r["kind"] == kind
                                                   for x in r["reasons"]))}
                   for kind in settings.kinds},
        "kept": len(rows), "tried": len(records),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# ----------------------------------------------------------------------------- evaluation

def truth_masks(manifest: Path, size: int, resize_ratio: float,
                class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """bool (16, size, size) truth of every manifest row, by resolved video path: its boxes as
    the pipeline maps them onto the clip (:func:`transforms.decode.clip_boxes`), or its frames."""
    from transforms.io import read_manifest
    from transforms.records import ClipRef

    out = {}
    for ref in read_manifest(str(manifest), FRAMES, 1, class_names):
        if not isinstance(ref, ClipRef):
            raise ValueError(f"{manifest}: unreadable row: {ref}")
        clip = decode_clip(ref.video, 0, FRAMES, size, resize_ratio)
        truth = np.zeros((FRAMES, size, size), dtype=bool)
        if ref.boxes is not None:
            boxes = clip_boxes(ref.boxes, clip.frame_indices, clip.source_size, clip.scale,
                               clip.offset, size)
            truth = box_oracle_map(truth.shape, boxes) > 0
        elif ref.frame_range is not None:
            truth[ref.frame_range[0]:ref.frame_range[1]] = True
        out[same_file(ref.video)] = truth
    return out


def summarise_run(output: str, manifest: Path, where: Sequence[str] = (),
                  network: dict | None = None) -> str:
    """Markdown: per method the evaluation table of :mod:`pipeline.apps.evaluate` (deletion,
    insertion, S-PT, T-PT, the above-median mass in the true frames, cost) over all composites,
    the above-median mass in the truth (box or frames) per kind, and how much of the clip each
    map marks (:func:`coverage`), with 95 % intervals.

    One row per variant (model, weights, config, method), labelled as the report labels it
    (``method c:<config>`` only where a method has several configs): an output holding a method
    at two settings is never pooled. ``where`` narrows the rows as the report's ``--where``
    does (``KEY=VALUE`` / ``KEY!=VALUE``). ``network``: the options of the network that
    verified the benchmark (default I3D): the truth is mapped onto its input as the pipeline
    maps it.
    """
    from pipeline.apps.evaluate import markdown, summarise
    from pipeline.apps.report.read import Selection, combined_filter, read_maps
    from pipeline.apps.report.stats import bootstrap_ci
    from pipeline.apps.report.tables import group_labels
    from pipeline.outputs import Output
    from transforms.model_handler import VideoModelHandler

    selections = [Selection.parse(w) for w in where]
    out = Output(output)
    metrics = out.table("metrics")
    rows = [r for t in out.scan(metrics, metrics.schema.names, combined_filter(selections))
            for r in t.to_pylist()]
    if not rows:
        raise ValueError(f"{output} holds no metrics rows" + (
            f" with {' '.join(map(str, selections))}" if selections else ""))
    labels = group_labels(list(dict.fromkeys(_variant(r) for r in rows)))
    models = {m for m, _ in labels.values()}
    label = {g: (f"{m} / {me}" if len(models) > 1 else me) for g, (m, me) in labels.items()}
    handler = VideoModelHandler(model_config(network))
    spec, names = handler.spec(), handler.class_names()
    truths = truth_masks(manifest, spec.input_size, spec.resize_ratio, names)
    kinds = {}
    for line in manifest.read_text().splitlines():
        r = json.loads(line)
        kinds[same_file(str(manifest.parent / r["video"]))] = r["kind"]
    shares: dict[tuple[str, str], list[float]] = {}
    unmatched: set[str] = set()
    covered: dict[str, list[tuple[float, float]]] = {}
    by_variant: dict[tuple, list[dict]] = {}
    for r in rows:
        by_variant.setdefault(_variant(r), []).append(r)
    for g, mine in by_variant.items():
        exact = [Selection("model", g[0]), Selection("weights_sha256", g[1] or ""),
                 Selection("config_hash", g[2] or "")]
        maps = read_maps(out, [(r["clip_id"], r["method"]) for r in mine],
                         [*selections, *(s for s in exact if s.value)])
        for r in mine:
            key, video = (r["clip_id"], r["method"]), same_file(r["video"])
            if key not in maps or video not in truths:
                unmatched.add(r["video"])
                continue
            share = above_median_share_in(maps[key][1], truths[video])
            for group in (kinds.get(video, "?"), "all"):
                shares.setdefault((label[g], group), []).append(share)
            covered.setdefault(label[g], []).append(coverage(maps[key][1]))
    if not shares:
        raise ValueError(f"no video of {output} is a composite of {manifest} (e.g. "
                         f"{sorted(unmatched)[0]}): run --summarise from the directory the "
                         "pipeline ran in, or give the pipeline absolute paths")
    groups = [k for k in (*KINDS, "all") if any(g == k for _, g in shares)]
    order = list(dict.fromkeys(label[_variant(r)] for r in rows))

    def ci(v: list[float]) -> str:
        m, lo, hi = bootstrap_ci(np.asarray(v))
        return "–" if np.isnan(m) else f"{m:.3f} [{lo:.3f}, {hi:.3f}] (n {len(v)})"

    lines = ["| method | " + " | ".join(groups) + " |", "| --- |" + " --- |" * len(groups)]
    for m in order:
        lines.append(f"| {m} | " + " | ".join(ci(shares.get((m, g), [])) for g in groups)
                     + " |")
    cover = ["| method | voxels above half the map's maximum | the map's mean |",
             "| --- | --- | --- |"]
    for m in order:
        c = np.asarray(covered.get(m, []), np.float64).reshape(-1, 2)
        cover.append(f"| {m} | {ci(list(c[:, 0]))} | {ci(list(c[:, 1]))} |")
    labelled = [{**r, "method": label[_variant(r)]} for r in rows]
    return (markdown(summarise(labelled), order) + "\n\nAbove-median mass in the truth (box "
            "or frames), per kind, mean [95 % interval] (clips):\n\n" + "\n".join(lines)
            + "\n\nHow much of the clip each map marks, mean [95 % interval] (clips); the "
            "extremal methods' masks are in [0, 1], so their mean is the share of the clip they "
            "keep (their areas' mean when converged):\n\n" + "\n".join(cover)
            + "\n" + (f"\n({len(unmatched)} videos of the output are not composites of this "
                      "manifest or have no map: left out of this table.)\n" if unmatched
                      else ""))


def coverage(saliency: np.ndarray) -> tuple[float, float]:
    """How much of the clip a float (T, H, W) map marks: (the share of its voxels above half its
    maximum, nan when the maximum is not positive; its mean)."""
    s = np.asarray(saliency, np.float64)
    top = s.max()
    return float((s > 0.5 * top).mean()) if top > 0 else float("nan"), float(s.mean())


def same_file(video: str) -> str:
    """A local path made absolute (against the working directory), so that a manifest's row and
    the pipeline's row of one file compare equal; URIs unchanged."""
    return video if "://" in video else str(Path(video).resolve())


def _variant(row: dict) -> tuple[str, ...]:
    """What makes a metrics row comparable with another (the report's group)."""
    from pipeline.apps.report.read import VARIANT_KEYS

    return (*(row[k] for k in VARIANT_KEYS), row["method"])


def round_robin(rows: list[dict]) -> list[dict]:
    """Rows reordered one of each ``kind`` in turn (kinds in first-seen order), each kind's
    rows in their order."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["kind"], []).append(r)
    queues = list(by.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def _rounded(v: float) -> float | None:
    return None if np.isnan(v) else round(v, 4)


def _pair(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        lo, sep, hi = text.partition(",")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}")
        return kind(lo), kind(hi)
    return parse


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    d = Settings()
    ap = argparse.ArgumentParser(prog="python -m pipeline.apps.realbench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--per-kind", type=int, default=d.per_kind,
                    help="verified composites wanted per kind")
    ap.add_argument("--kinds", default=",".join(d.kinds), help="comma list of " + ", ".join(KINDS))
    ap.add_argument("--max-tries", type=int, default=d.max_tries,
                    help="candidates tried per kind at most")
    ap.add_argument("--segments", type=int, default=d.segments,
                    help="16-frame segments scored per source video")
    ap.add_argument("--min-alone", type=float, default=d.min_alone,
                    help="an evidence segment's top class needs this p on its own")
    ap.add_argument("--min-p", type=float, default=d.min_p,
                    help="the composite's p(target) must be at least this")
    ap.add_argument("--max-left", type=float, default=d.max_left,
                    help="blanking the truth leaves at most this share of p")
    ap.add_argument("--min-kept", type=float, default=d.min_kept,
                    help="blanking everything else keeps at least this share of p")
    ap.add_argument("--fill", default=d.fill, help="blanking fill: mean | blur")
    ap.add_argument("--fill-sigma", type=float, default=d.fill_sigma,
                    help="blur fill: Gaussian sigma in px of the 224-px crop")
    ap.add_argument("--paste-scale", type=_pair(float), default=d.paste_scale,
                    help="LO,HI pasted side as a share of the crop side")
    ap.add_argument("--split", type=_pair(float), default=d.split,
                    help="LO,HI evidence column width as a share of the crop side")
    ap.add_argument("--range-len", type=_pair(int), default=d.range_len,
                    help="LO,HI evidence frames in a temporal composite")
    ap.add_argument("--range-starts", choices=RANGE_STARTS, default=d.range_starts,
                    help="where a temporal composite's range starts: any frame, or the clip's "
                         "first or last frames (halves)")
    ap.add_argument("--summarise", default=None, metavar="RUN",
                    help="generate nothing: summarise the pipeline's --output RUN on OUT's "
                         "composites (written to RUN/realbench.md)")
    ap.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                    help="with --summarise: only rows with KEY=VALUE (or KEY!=VALUE), as the "
                         "report's --where; repeatable")
    ap.add_argument("--precision", default=None,
                    help="fp32 | bf16 (default: bf16 where the CPU has it); run the pipeline "
                         "with the same")
    net = ap.add_argument_group("the network whose truth is verified (the pipeline's options)")
    add_arguments(net, [declared_options()[n] for n in NETWORK_OPTIONS])
    net.set_defaults(model=MODEL)
    args = ap.parse_args(argv)
    settings = Settings(seed=args.seed, per_kind=args.per_kind,
                        kinds=tuple(k for k in args.kinds.split(",") if k),
                        max_tries=args.max_tries, segments=args.segments,
                        min_alone=args.min_alone, min_p=args.min_p, max_left=args.max_left,
                        min_kept=args.min_kept, fill=args.fill, fill_sigma=args.fill_sigma,
                        paste_scale=args.paste_scale, split=args.split,
                        range_len=args.range_len, range_starts=args.range_starts)
    return args, settings


def load_scorer(precision: str | None, network: dict | None = None):
    """The network being explained (``network``: its options, default I3D), as the pipeline
    loads it."""
    from pipeline.apps.demo import cpu_has_bf16
    from transforms.model_handler import VideoModelHandler

    precision = precision or ("bf16" if cpu_has_bf16() else "fp32")
    return VideoModelHandler(model_config(network), "cpu", precision).load_model()


def recorded_network(out: Path) -> dict | None:
    """The network options ``out/summary.json`` records (None: no summary, or one written
    before networks were recorded, i.e. I3D)."""
    path = out / "summary.json"
    return json.loads(path.read_text()).get("network") if path.exists() else None


def model_config(network: dict | None):
    """The pipeline's :class:`ModelConfig` of recorded network options (None: I3D)."""
    from transforms.model_handler import ModelConfig

    values = {k: tuple(v) if isinstance(v, list) else v for k, v in (network or {}).items()}
    return ModelConfig(**{"model": MODEL, **values})


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = parse_args(argv)
    from models.i3d_weights import WeightsUnavailable
    from pipeline.apps.footage import FootageUnavailable

    given = {n: getattr(args, n) for n in NETWORK_OPTIONS if getattr(args, n) is not None}
    if args.summarise:
        try:
            text = summarise_run(args.summarise, args.out / "realbench.jsonl", args.where,
                                 recorded_network(args.out) or given)
        except (ValueError, OSError) as exc:
            print(f"realbench: {exc}", file=sys.stderr)
            return 1
        Path(args.summarise, "realbench.md").write_text(text)
        print(text)
        return 0
    try:
        settings.check()
        videos = sources()
        scorer = load_scorer(args.precision, given)
        summary = generate(args.out, scorer, videos, settings, network=given)
    except (FootageUnavailable, WeightsUnavailable, ClipError, ValueError, OSError) as exc:
        print(f"realbench: {exc}", file=sys.stderr)
        return 1
    print(f"\n{'kind':<12} {'tried':>5} {'kept':>5}  rejected (reason: count)")
    for kind, c in summary["counts"].items():
        why = ", ".join(f"{k}: {v}" for k, v in sorted(c["rejected"].items())) or "-"
        print(f"{kind:<12} {c['tried']:>5} {c['kept']:>5}  {why}")
    print(f"\n{summary['kept']} verified composites of {summary['tried']} tried in "
          f"{summary['wall_seconds']:.0f} s; wrote {args.out / 'realbench.jsonl'}, "
          f"evidence.jsonl, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
