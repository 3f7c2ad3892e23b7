"""Pictures a person can look at: frame strips with the saliency map overlaid."""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

SCALES = {
    "minmax": "min-max over the clip",
    "positive": "0 to the clip's max, negatives as 0",
}


def normalise_map(saliency: np.ndarray, scale: str = "minmax") -> np.ndarray:
    """Rescale a (T, H, W) map to [0, 1] over the whole clip (display only).

    ``minmax``: (S − min) / (max − min). ``positive``: max(S, 0) / max — the score drops only,
    so that negative values (occluding there *raised* the score) do not stretch the scale. A
    map without signal (constant, or no positive value for ``positive``) is all 0.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    lo = 0.0 if scale == "positive" else float(saliency.min())
    hi = float(saliency.max())
    if hi <= lo:
        return np.zeros_like(saliency, dtype=np.float32)
    return np.clip((saliency - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3) RGB frame blended with a JET-coloured heat map in [0, 1] (H, W)."""
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(frame, 1 - alpha, colour, alpha, 0)


def strip_frames(num_frames: int, count: int = 5) -> list[int]:
    """Evenly spread frame indices including the first and last (1, 5, 9, 13, 16 of 16)."""
    return sorted({int(round(i * (num_frames - 1) / (count - 1))) for i in range(count)})


def has_signal(saliency: np.ndarray, scale: str = "minmax") -> bool:
    """Whether :func:`normalise_map` has anything to draw (a constant map has not)."""
    lo = 0.0 if scale == "positive" else float(saliency.min())
    return float(saliency.max()) > lo


def fit_map(saliency: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A (T', H', W') map resampled (nearest) to the frames' (T, H, W), e.g. a pooled map."""
    t, h, w = shape
    if saliency.shape == shape:
        return saliency
    idx = np.minimum(np.arange(t) * saliency.shape[0] // t, saliency.shape[0] - 1)
    return np.stack([cv2.resize(saliency[i].astype(np.float32), (w, h),
                                interpolation=cv2.INTER_NEAREST) for i in idx])


def _label_column(height: int, row_h: int, labels: Sequence[str], width: int) -> np.ndarray:
    """A white column with each row's label (several lines, split on newlines)."""
    col = np.full((height, width, 3), 255, np.uint8)
    for r, text in enumerate(labels):
        for k, line in enumerate(text.split("\n")):
            cv2.putText(col, line[:18], (3, r * row_h + 14 + 13 * k), cv2.FONT_HERSHEY_SIMPLEX,
                        0.38, (0, 0, 0), 1)
    return col


def method_grid(frames: np.ndarray, maps: Sequence[tuple[str, np.ndarray]], title: str = "",
                indices: Sequence[int] | None = None,
                boxes: Sequence[Sequence[float] | None] | None = None,
                scale: str = "minmax") -> np.ndarray:
    """The AOSA paper's Fig. 5 layout: a row of frames, then one overlay row per map.

    Each map is normalised on its own over the whole clip (``scale``, stated in the title); a
    map without signal is drawn as the grey frame marked "no signal", not as stretched noise.

    Args:
        frames: uint8 (T, H, W, 3) RGB.
        maps: (label, (T', H', W') map) per row; labels, when any is non-empty, are drawn in a
            column on the left.
        title: text drawn above the grid.
        indices: frames to show (default :func:`strip_frames`).
        boxes: optional per-frame ground-truth boxes drawn in green on every row.
        scale: colour scale (:func:`normalise_map`).

    Returns:
        uint8 (rows, cols, 3) RGB image.
    """
    idx = list(indices) if indices is not None else strip_frames(frames.shape[0])
    maps = [(label, fit_map(m, frames.shape[:3])) for label, m in maps]
    zoom = max(1, 160 // frames.shape[1])  # small inputs are enlarged (nearest) for display
    if zoom > 1:
        frames = frames.repeat(zoom, axis=1).repeat(zoom, axis=2)
        maps = [(label, m.repeat(zoom, axis=1).repeat(zoom, axis=2)) for label, m in maps]
        if boxes is not None:
            boxes = [None if b is None else [v * zoom for v in b] for b in boxes]
    rows = [[frames[t].copy() for t in idx]]
    for _, saliency in maps:
        signal = has_signal(saliency, scale)
        heat = normalise_map(saliency, scale)
        row = []
        for t in idx:
            if signal:
                o = overlay(frames[t], heat[t])
                r, c = np.unravel_index(np.argmax(saliency[t]), saliency[t].shape)
                cv2.drawMarker(o, (int(c), int(r)), (255, 255, 255), cv2.MARKER_CROSS, 8, 1)
            else:
                grey = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
                o = cv2.cvtColor(grey // 2 + 64, cv2.COLOR_GRAY2RGB)
                cv2.putText(o, "no signal", (3, o.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            (255, 255, 255), 1)
            row.append(o)
        rows.append(row)
    for t, f in zip(idx, rows[0], strict=True):
        cv2.putText(f, f"t={t + 1}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    if boxes is not None:
        for row in rows:
            for t, img in zip(idx, row, strict=True):
                if boxes[t] is not None:
                    x0, y0, x1, y1 = (int(round(v)) for v in boxes[t])
                    cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
    grid = np.concatenate([np.concatenate(r, 1) for r in rows], 0)
    if any(label for label, _ in maps):
        labels = ["frames"] + [label + ("" if has_signal(m, scale) else "\n(constant)")
                               for label, m in maps]
        grid = np.concatenate([_label_column(grid.shape[0], frames.shape[1], labels, 110),
                               grid], 1)
    title = f"{title} [{SCALES[scale]}]" if title else ""
    if title:
        band = np.full((22, grid.shape[1], 3), 255, np.uint8)
        cv2.putText(band, title[:150], (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        grid = np.concatenate([band, grid], 0)
    return grid


def frame_strip(frames: np.ndarray, saliency: np.ndarray, title: str = "",
                indices: Sequence[int] | None = None,
                boxes: Sequence[Sequence[float] | None] | None = None,
                scale: str = "minmax") -> np.ndarray:
    """Two rows — frames, frames with saliency — for the chosen frame indices.

    Args:
        frames: uint8 (T, H, W, 3) RGB.
        saliency: (T, H, W).
        title: text drawn above the strip.
        indices: frames to show (default :func:`strip_frames`).
        boxes: optional per-frame ground-truth boxes drawn in green on both rows.
        scale: colour scale of the map (:func:`normalise_map`), stated in the title.

    Returns:
        uint8 (rows, cols, 3) RGB image.
    """
    return method_grid(frames, [("", saliency)], title, indices, boxes, scale)


def save_png(path: str, image_rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def target_probs(output: str) -> dict[tuple[str, int], float]:
    """(clip_id, explained class) → the network's probability of that class on the clip."""
    from pipeline.outputs import read_table

    table = read_table(os.path.join(output, "metrics"),
                       columns=["clip_id", "target_class", "target_prob"])
    rows = [] if table is None else table.to_pylist()
    return {(r["clip_id"], r["target_class"]): r["target_prob"] for r in rows}


def render_run(output: str, figures: str, methods: Sequence[str] | None = None,
               limit: int | None = None, manifest: str | None = None,
               scale: str = "minmax") -> list[str]:
    """Draw a frame strip for each saliency row of a finished run.

    Frames are decoded again with the model's preprocessing (size from the map, resize ratio from
    the registry); ground-truth boxes are drawn when the run's manifest is given.

    Returns:
        Paths of the PNG files written.
    """

    from models.registry import get_spec
    from pipeline.outputs import iter_tables
    from transforms.decode import clip_boxes, decode_clip
    from transforms.encoding import decode_map
    from transforms.io import read_manifest

    def stored_maps():  # one file at a time: memory is one file's maps
        for _, table in iter_tables(os.path.join(output, "saliency")):
            maps = table.column("saliency").combine_chunks().to_numpy_ndarray()
            for row, stored in zip(table.drop_columns(["saliency"]).to_pylist(), maps,
                                   strict=True):
                yield row, decode_map(stored, row["encoding"], row["map_min"],
                                      row["map_max"], row["pool"], upsample=True)

    refs: dict | None = None
    probs = target_probs(output)
    os.makedirs(figures, exist_ok=True)
    written = []
    for row, sal in stored_maps():
        if refs is None:
            refs = {}
            if manifest:
                for ref in read_manifest(manifest, row["num_frames"], row["frame_stride"]):
                    refs[getattr(ref, "clip_id", None)] = ref
        if methods and row["method"] not in methods:
            continue
        if limit is not None and len(written) >= limit:
            break
        spec, (t, size, _) = get_spec(row["model"]), sal.shape
        clip = decode_clip(row["video"], row["start_frame"], t, size, spec.resize_ratio,
                           row["frame_stride"])
        ref = refs.get(row["clip_id"])
        boxes = None
        if ref is not None and getattr(ref, "boxes", None) is not None:
            boxes = clip_boxes(ref.boxes, clip.frame_indices, clip.source_size, clip.scale,
                               clip.offset, size)
        name = os.path.splitext(os.path.basename(row["video"]))[0]
        p = probs.get((row["clip_id"], row["target_class"]))
        explained = f"'{row['target_name']}'" + ("" if p is None else f" (p {p:.2f})")
        title = f"{name}: {row['method']} for {explained} ({row['model']})"
        path = os.path.join(figures, f"{name}_{row['clip_id'][:6]}_{row['method']}.png")
        save_png(path, frame_strip(clip.frames, sal.astype(np.float32), title, boxes=boxes,
                                   scale=scale))
        written.append(path)
    if refs is None:
        raise ValueError(f"{output} has no saliency/ table")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Frame strips with saliency for a finished run.")
    ap.add_argument("--output", required=True, help="the run's --output directory")
    ap.add_argument("--figures", default=None, help="where PNGs go (default OUTPUT/figures)")
    ap.add_argument("--methods", default=None, help="comma list (default: all)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many pictures")
    ap.add_argument("--manifest", default=None, help="the run's manifest, to draw its boxes")
    ap.add_argument("--scale", default="minmax", choices=sorted(SCALES),
                    help="colour scale: minmax (over the clip) or positive (0 to the clip's "
                         "max; negative score changes shown as 0)")
    a = ap.parse_args(argv)
    paths = render_run(a.output, a.figures or f"{a.output.rstrip('/')}/figures",
                       a.methods.split(",") if a.methods else None, a.limit, a.manifest,
                       a.scale)
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
