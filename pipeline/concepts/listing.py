"""Concept, random and input clips of the concepts job; bad input → one-line ValueError."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems

from transforms.io import VIDEO_EXTENSIONS, is_manifest, list_clips
from transforms.records import ClipRef, make_clip_id
from transforms.tcav_stages import IMAGE_EXTENSIONS


def _refs(paths: Sequence[str | tuple[str, int]], num_frames: int, frame_stride: int
          ) -> list[ClipRef]:
    out = []
    for p in paths:
        video, start = p if isinstance(p, tuple) else (p, 0)
        out.append(ClipRef(make_clip_id(video, start, num_frames, frame_stride), video, start))
    return out


def _concept_manifest(path: str) -> dict[str, list[tuple[str, int]]]:
    if not FileSystems.exists(path):
        raise ValueError(f"--concepts manifest {path} does not exist")
    with FileSystems.open(path) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8")
        rows = (list(csv.DictReader(text)) if path.lower().endswith(".csv")
                else [json.loads(line) for line in text if line.strip()])
    out: dict[str, list[tuple[str, int]]] = {}
    for n, row in enumerate(rows, start=1):
        if not row.get("video") or not row.get("concept"):
            raise ValueError(f"--concepts {path}: row {n} needs 'video' and 'concept'")
        video = str(row["video"])
        if "://" not in video and not os.path.isabs(video):
            video = os.path.join(os.path.dirname(path), video)
        start = str(row.get("start_frame") or 0)
        if not start.isdigit():
            raise ValueError(f"--concepts {path}: row {n}: start_frame must be an integer >= 0")
        out.setdefault(str(row["concept"]), []).append((video, int(start)))
    return out


def list_concepts(spec: str, num_frames: int, frame_stride: int, min_clips: int
                  ) -> dict[str, list[ClipRef]]:
    """Concept name → its clips (videos from frame 0 or a manifest's ``start_frame``, or still
    images).

    Raises:
        ValueError: ``spec`` is missing or holds no concept; a concept folder is empty or has
            fewer than ``min_clips`` clips.
    """
    if is_manifest(spec):
        found = _concept_manifest(spec)
    else:
        if not os.path.isdir(spec):
            raise ValueError(f"--concepts {spec} is not a directory or a manifest")
        found = {}
        for name in sorted(os.listdir(spec)):
            folder = os.path.join(spec, name)
            if not os.path.isdir(folder) or name.startswith("."):
                continue
            found[name] = sorted(
                os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                if f.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS))
            if not found[name]:
                raise ValueError(f"concept {name!r} ({folder}) holds no video or image file "
                                 f"({', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)})")
    if not found:
        raise ValueError(f"--concepts {spec} holds no concept (one sub-folder per concept)")
    for name, paths in found.items():
        if len(paths) < min_clips:
            raise ValueError(f"concept {name!r} has {len(paths)} clips; --min-concept-clips is "
                             f"{min_clips}")
    return {name: _refs(paths, num_frames, frame_stride) for name, paths in found.items()}


def list_inputs(spec: str, what: str, num_frames: int, frame_stride: int,
                class_names: Sequence[str] | None) -> list[ClipRef]:
    """The clips of ``--input`` / ``--random`` (bad manifest rows: a ValueError naming the
    first one, since a concept test on a silently shorter list would mislead)."""
    try:
        items = list(list_clips(spec, num_frames, frame_stride, class_names))
    except ValueError as exc:
        raise ValueError(str(exc).replace("--input", what)) from None
    refs = [i for i in items if isinstance(i, ClipRef)]
    bad = [i for i in items if not isinstance(i, ClipRef)
           and getattr(i, "error_type", "") != "DuplicateClip"]
    if bad:
        raise ValueError(f"{what}: {bad[0].video}: {bad[0].message}")
    return refs


def resolve_targets(targets: str, inputs: Sequence[ClipRef], names: Sequence[str] | None,
                    num_classes: int) -> dict[int, list[str]]:
    """Class index → clip ids tested for it.

    ``label``: each clip for its own label; otherwise names / indices, every clip each.

    Raises:
        ValueError: a clip without a label (``label``), or a target that is not a class.
    """
    if targets == "label":
        missing = [r for r in inputs if r.label is None]
        if missing:
            raise ValueError(f"--targets label: {len(missing)} clips of --input have no label "
                             f"(first: {missing[0].video})")
        out: dict[int, list[str]] = {}
        for r in inputs:
            if not 0 <= r.label < num_classes:
                raise ValueError(f"{r.video}: label {r.label} is not a class "
                                 f"(0..{num_classes - 1})")
            out.setdefault(r.label, []).append(r.clip_id)
        return dict(sorted(out.items()))
    chosen = []
    for t in (x.strip() for x in targets.split(",") if x.strip()):
        if t.isdigit() and int(t) < num_classes:
            chosen.append(int(t))
        elif names and t in names:
            chosen.append(list(names).index(t))
        else:
            shown = ", ".join(list(names or [])[:10]) + (" ..." if len(names or []) > 10 else "")
            raise ValueError(f"--targets: {t!r} is not a class of the network "
                             f"({num_classes} classes: {shown or '0..' + str(num_classes - 1)})")
    return {k: [r.clip_id for r in inputs] for k in dict.fromkeys(chosen)}
