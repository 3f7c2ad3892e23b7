"""Ground-truth boxes for the pictures: from the manifest each run read (``runs/<run_id>.json``,
else ``run.json``: ``config.input``), mapped to the clip's crop pixels as the job maps them
(:func:`transforms.decode.clip_boxes`).

Only the boxes of the videos asked for are kept, whatever the manifest's size; each manifest is
read once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from apache_beam.io.filesystems import FileSystems

from pipeline.outputs import run_history
from transforms.sink import OutputPaths

Box = tuple[float, float, float, float]


class GroundTruth:
    """The manifest boxes of some videos of one output, read on first use.

    Args:
        root: the run's ``--output``.
        videos: the videos whose boxes are wanted (as the rows store them).
    """

    def __init__(self, root: str, videos: Iterable[str]) -> None:
        self.root = root
        self.videos = {v for v in videos if v}
        self._inputs: dict[str, str] | None = None
        self._boxes: dict[str, dict[str, tuple]] = {}
        self._problems: dict[str, str] = {}

    def inputs(self) -> dict[str, str]:
        """{run_id: the manifest it read}; ``""`` maps to the latest run's (``run.json``)."""
        if self._inputs is None:
            out = OutputPaths(self.root)
            self._inputs = {r["run_id"]: r.get("config", {}).get("input")
                            for r in run_history(out) if r.get("run_id")}
            try:
                with FileSystems.open(out.run_json) as fh:
                    self._inputs[""] = json.loads(fh.read()).get("config", {}).get("input")
            except Exception:  # noqa: BLE001 - no run.json (rows written by other tools)
                pass
        return self._inputs

    def video_boxes(self, video: str, run_id: str | None) -> tuple[tuple | None, str]:
        """(per video frame boxes in source pixels, or None; a note when they cannot be had)."""
        inputs = self.inputs()
        manifest = inputs.get(run_id or "") or inputs.get("")
        if not manifest:
            return None, ""
        if manifest not in self._boxes:
            self._read(manifest)
        if manifest in self._problems:
            return None, self._problems[manifest]
        return self._boxes[manifest].get(video), ""

    def _read(self, manifest: str) -> None:
        from transforms.io import read_manifest
        from transforms.records import ClipRef

        found: dict[str, tuple] = {}
        try:
            for ref in read_manifest(manifest, 1, 1):
                if isinstance(ref, ClipRef) and ref.boxes is not None and ref.video in self.videos:
                    found.setdefault(ref.video, ref.boxes)
        except Exception as exc:  # noqa: BLE001 - moved or unreadable: pictures say so
            self._problems[manifest] = (f"boxes not drawn: manifest {manifest} cannot be read "
                                        f"({type(exc).__name__})")
        self._boxes[manifest] = found


def crop_boxes(boxes: Sequence, clip, size: int) -> tuple[list | None, str]:
    """A video's boxes in the decoded clip's crop pixels (one box or None per clip frame).

    Args:
        boxes: per video frame [x0, y0, x1, y1] or None, source pixels.
        clip: the :class:`~transforms.decode.DecodedClip` of the pictured frames.
        size: the crop's side in pixels.

    Returns:
        (boxes, "") or (None, a note saying why they are not drawn).
    """
    from transforms.decode import clip_boxes

    try:
        return clip_boxes(boxes, clip.frame_indices, clip.source_size, clip.scale, clip.offset,
                          size), ""
    except ValueError as exc:
        return None, f"boxes not drawn: {exc}"
