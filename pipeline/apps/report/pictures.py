"""Pictures of chosen clips: the Fig. 5 grid (one row per method) and an animated overlay.

Frames are decoded again from the row's video with the network's preprocessing; when the video
cannot be read (moved, another machine) the maps are drawn over grey frames and the picture
says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.apps.report.load import RunData
from pipeline.apps.visualize import (
    SCALES,
    fit_map,
    has_signal,
    method_grid,
    normalise_map,
    overlay,
    save_png,
)


def pick_clips(run: RunData, metric: str, method: str | None, count: int,
               clips: Sequence[str] = ()) -> list[str]:
    """Clip ids to picture: the given ones (clip ids, their prefixes, or video file names), or
    the ``count`` best and ``count`` worst clips of ``method`` by ``metric``.

    Raises:
        ValueError: a given clip matches no row.
    """
    ids = run.strings("clip_id")
    if clips:
        videos = np.array([os.path.basename(v or "") for v in run.strings("video")], object)
        out = []
        for c in clips:
            hit = [i for i, (cid, v) in enumerate(zip(ids, videos, strict=True))
                   if cid.startswith(c) or v == c or cid.startswith(f"{c}#")]
            if not hit:
                raise ValueError(f"--clips {c}: no clip id, id prefix or video name matches")
            out += [ids[i] for i in hit]
        return list(dict.fromkeys(out))
    methods = run.strings("method")
    chosen = method if method in set(methods) else sorted(set(methods))[0]
    rows = np.flatnonzero(methods == chosen)
    values = run.column(metric, rows)
    ok = np.isfinite(values)
    rows, values = rows[ok], values[ok]
    if not rows.size:
        return []
    order = np.argsort(values, kind="stable")
    best_first = order[::-1] if metric != "deletion_auc" else order
    picked = list(best_first[:count]) + list(best_first[::-1][:count])
    return list(dict.fromkeys(ids[rows[i]] for i in picked))


def clip_frames(row: dict, shape: tuple[int, int, int]) -> tuple[np.ndarray, str, object]:
    """uint8 (T, H, W, 3) frames of a saliency row's clip, a note ('' when decoded) and the
    :class:`~transforms.decode.DecodedClip` (None when the frames are grey)."""
    from models.registry import get_spec
    from transforms.decode import decode_clip

    t, h, _ = shape
    video = row.get("video") or ""
    if "://" not in video and not os.path.exists(video):
        return np.full((*shape, 3), 128, np.uint8), "frames unavailable (video not found)", None
    try:
        try:
            ratio = get_spec(row["model"]).resize_ratio
        except ValueError:
            ratio = 1.0  # a user's factory: the registry does not know its preprocessing
        clip = decode_clip(row["video"], row["start_frame"], t, h, ratio, row["frame_stride"])
        return clip.frames, "", clip
    except Exception as exc:  # noqa: BLE001 - any unreadable video gets grey frames
        return (np.full((*shape, 3), 128, np.uint8),
                f"frames unavailable ({type(exc).__name__})", None)


SWATCH = 6  # px: the method's colour beside its label


def grid_png(path: str, frames: np.ndarray, rows: Sequence[tuple[str, np.ndarray]],
             title: str, scale: str, colours: Sequence[tuple[int, int, int]] = (),
             boxes: Sequence | None = None) -> str:
    """Write the Fig. 5 grid (frames, then one row per labelled map) as a PNG.

    Args:
        colours: (r, g, b) per row of ``rows``: a bar of that colour left of its label.
        boxes: ground-truth box (crop pixels) or None per frame, drawn on every row.
    """
    grid = method_grid(frames, rows, scale=scale, boxes=boxes)
    row_h = grid.shape[0] // (len(rows) + 1)  # the frames' row, then one per map, equal
    bars = np.full((grid.shape[0], SWATCH + 2, 3), 255, np.uint8)
    for r, colour in enumerate(colours, start=1):
        bars[r * row_h:(r + 1) * row_h, :SWATCH] = colour
    grid = np.concatenate([bars, grid], 1)
    band = np.full((22, grid.shape[1], 3), 255, np.uint8)
    cv2.putText(band, f"{title} [{SCALES[scale]}]"[:150], (4, 15), cv2.FONT_HERSHEY_SIMPLEX,
                0.45, (0, 0, 0), 1)
    save_png(path, np.concatenate([band, grid], 0))
    return path


def draw_box(image: np.ndarray, box: Sequence[float] | None) -> np.ndarray:
    """A green ground-truth rectangle on a uint8 (H, W, 3) image (in place; None: nothing)."""
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 1)
    return image


def animation_frames(frames: np.ndarray, rows: Sequence[tuple[str, np.ndarray]], scale: str,
                     tile: int = 128, colours: Sequence[tuple[int, int, int]] = (),
                     boxes: Sequence | None = None) -> list[np.ndarray]:
    """Every frame of the clip beside each map's overlay, labelled: T × uint8 (h, w, 3).

    Args:
        frames: uint8 (T, H, W, 3); ``rows``: (label, (T', H', W') map) per method.
        colours: (r, g, b) per row: a bar of that colour under its label.
        boxes: ground-truth box (crop pixels) or None per frame, drawn on every tile.
    """
    t, h, w = frames.shape[:3]
    maps = [(label, fit_map(m, (t, h, w))) for label, m in rows]
    heats = [normalise_map(m, scale) if has_signal(m, scale) else None for _, m in maps]
    zoom = max(1, tile // h)
    out = []
    for k in range(t):
        tiles = [frames[k]]
        for heat in heats:
            tiles.append(overlay(frames[k], heat[k]) if heat is not None
                         else cv2.cvtColor(cv2.cvtColor(frames[k], cv2.COLOR_RGB2GRAY) // 2 + 64,
                                           cv2.COLOR_GRAY2RGB))
        if boxes is not None:
            tiles = [draw_box(x.copy(), boxes[k]) for x in tiles]
        tiles = [x.repeat(zoom, 0).repeat(zoom, 1) for x in tiles]
        band = np.full((34, tiles[0].shape[1] * len(tiles), 3), 255, np.uint8)
        names = [f"t={k + 1}/{t}"] + [label.split("\n")[0] + ("" if heat is not None else
                                                              " (constant)")
                                       for (label, _), heat in zip(maps, heats, strict=True)]
        for i, name in enumerate(names):
            cv2.putText(band, name[:20], (4 + i * tiles[0].shape[1], 13),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        for i, colour in enumerate(colours, start=1):
            x0 = i * tiles[0].shape[1]
            band[16:19, x0 + 4:x0 + tiles[0].shape[1] - 4] = colour
        cv2.putText(band, SCALES[scale], (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
        out.append(np.concatenate([band, np.concatenate(tiles, 1)], 0))
    return out


def write_gif(path: str, images: Sequence[np.ndarray], fps: float = 6.0) -> str:
    """An animated GIF (looping) of uint8 (h, w, 3) RGB images, with Pillow."""
    from PIL import Image

    pics = [Image.fromarray(im).convert("P", palette=Image.Palette.ADAPTIVE, colors=128)
            for im in images]
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=int(1000 / fps),
                 loop=0, optimize=True)
    return path
