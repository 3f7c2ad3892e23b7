"""The clip list: a directory of videos, a glob, or a CSV / JSONL manifest.

Manifest columns: ``video`` (path or URI; relative paths are relative to the manifest),
optional ``label`` (class index or class name), ``start_frame`` (default 0), ``boxes``
(JSON list, one ``[x0, y0, x1, y1]`` or ``null`` per frame of the video, source pixels) and
``frame_range`` (``[start, end]`` video frames, end exclusive: where the class's evidence is).
A malformed manifest row becomes an :class:`ErrorRecord`, never a crash.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
import os
import posixpath
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.records import ClipRef, ErrorRecord, make_clip_id
from transforms.remote import NO_OPTIONS, FileSystemsOptions

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv")
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".ndjson")


def is_manifest(spec: str) -> bool:
    return spec.lower().endswith(MANIFEST_EXTENSIONS)


def list_videos(spec: str) -> list[str]:
    """Video paths under a directory (recursively) or matching a glob, sorted."""
    if os.path.isdir(spec):
        found = [os.path.join(root, f) for root, _, files in os.walk(spec) for f in files]
    elif "://" in spec and not any(c in spec for c in "*?["):
        found = [m.path for r in FileSystems.match([spec.rstrip("/") + "/**"])
                 for m in r.metadata_list]
    else:
        found = [m.path for r in FileSystems.match([spec]) for m in r.metadata_list]
    return sorted(p for p in found if p.lower().endswith(VIDEO_EXTENSIONS))


def _resolve(video: str, manifest: str) -> str:
    if "://" in video or os.path.isabs(video):
        return video
    paths = posixpath if "://" in manifest else os.path  # URIs always use "/"
    return paths.join(paths.dirname(manifest), video)


def _label(value, class_names: Sequence[str] | None) -> int | None:
    if value is None or value == "":
        return None
    if (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if index < 0 or (class_names and index >= len(class_names)):
            raise ValueError(f"label {index} is not a class index (0 .. "
                             f"{len(class_names) - 1 if class_names else 'N - 1'})")
        return index
    if isinstance(value, str) and class_names and value in class_names:
        return list(class_names).index(value)
    raise ValueError(f"label {value!r} is neither a class index nor a known class name")


def _start_frame(value) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"start_frame must be a whole number of frames, got {value!r}")


def _boxes(value) -> tuple | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, list):
        raise ValueError("boxes must be a JSON list with one [x0, y0, x1, y1] or null per frame")
    out = []
    for i, b in enumerate(value):
        if b is not None and (not isinstance(b, list) or len(b) != 4):
            raise ValueError(f"box of frame {i} must be [x0, y0, x1, y1] or null, got {b!r}")
        out.append(None if b is None else tuple(float(v) for v in b))
    return tuple(out)


def _frame_range(value) -> tuple[int, int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] < value[1]):
        raise ValueError(f"frame_range must be [start, end] video frames with 0 <= start < end, "
                         f"got {value!r}")
    return (value[0], value[1])


MANIFEST_COLUMNS = ("video", "label", "start_frame", "boxes", "frame_range")


def _manifest_rows(path: str) -> Iterator[tuple[int, dict | Exception]]:
    """(line number, row) of a manifest; UTF-8 with or without a byte-order mark (what
    spreadsheets save as "CSV UTF-8"), any line ends.

    Raises:
        ValueError: the file is not UTF-8 text (one line naming the byte and its place).
    """
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")
            if path.lower().endswith(".csv"):
                for n, row in enumerate(csv.DictReader(text), start=2):
                    yield n, row
                return
            for n, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    yield n, obj if isinstance(obj, dict) else ValueError(
                        "row is not a JSON object")
                except json.JSONDecodeError as exc:
                    yield n, exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"--input {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
                         f"at offset {exc.start} of a block): save it as UTF-8") from None
    except csv.Error as exc:
        raise ValueError(f"--input {path} is not a readable CSV file: {exc}") from None


def check_manifest(path: str, needs_labels: bool = False) -> None:
    """Fail in one line, before any work, when a manifest cannot be used at all: not UTF-8,
    no rows, no ``video`` column, a misspelt known column (``lable``), or ``--target label``
    without a ``label`` column. Single bad rows are dead letters later, not errors here.

    Raises:
        ValueError: the reason, naming the columns found and expected.
    """
    if not FileSystems.exists(path):
        raise ValueError(f"--input manifest {path} does not exist")
    found: dict[str, None] = {}
    rows = 0
    for _, row in _manifest_rows(path):
        if isinstance(row, dict):
            rows += 1
            found.update(dict.fromkeys(str(k) for k in row if k is not None))
    expected = "video, and optionally " + ", ".join(MANIFEST_COLUMNS[1:])
    names = ", ".join(found) or "none"
    if rows == 0:
        raise ValueError(f"--input {path} holds no rows (columns found: {names})")
    for column in found:
        close = difflib.get_close_matches(column, MANIFEST_COLUMNS, n=1, cutoff=0.75)
        if column not in MANIFEST_COLUMNS and close and close[0] not in found:
            raise ValueError(f"--input {path}: unknown column {column!r} (did you mean "
                             f"{close[0]!r}?); columns found: {names}; expected: {expected}")
    if "video" not in found:
        raise ValueError(f"--input {path} has no 'video' column; columns found: {names}; "
                         f"expected: {expected}")
    if needs_labels and "label" not in found:
        raise ValueError(f"--target label needs a 'label' column in {path}; columns found: "
                         f"{names}")


def read_manifest(path: str, num_frames: int, frame_stride: int,
                  class_names: Sequence[str] | None = None, sampling: ClipSampling | None = None
                  ) -> Iterator[ClipRef | ErrorRecord]:
    """ClipRefs of a CSV / JSONL manifest; bad rows become ErrorRecords (stage ``list``).

    A row with a ``start_frame`` is one clip; a row without one is one clip from frame 0, or
    the clips ``sampling`` places over the whole video.
    """
    for line, row in _manifest_rows(path):
        where = f"{path}:{line}"
        try:
            if isinstance(row, Exception):
                raise ValueError(f"unreadable row: {row}")
            if not row.get("video"):
                raise ValueError("row has no 'video'")
            video = _resolve(str(row["video"]), path)
            explicit = row.get("start_frame") not in (None, "")
            start = _start_frame(row.get("start_frame"))
            if start < 0:
                raise ValueError(f"start_frame must be >= 0, got {start}")
            fields = (_label(row.get("label"), class_names), _boxes(row.get("boxes")),
                      _frame_range(row.get("frame_range")))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            yield ErrorRecord.of(make_clip_id(where, 0, num_frames, frame_stride), where,
                                 "list", exc)
            continue
        if explicit or sampling is None or not sampling.expands:
            yield ClipRef(make_clip_id(video, start, num_frames, frame_stride), video, start,
                          *fields)
        else:
            yield from video_clips(video, sampling, *fields)


@dataclass(frozen=True)
class ClipSampling:
    """Which clips of a video to explain.

    Attributes:
        num_frames: frames per clip; ``frame_stride``: take every n-th video frame.
        clips_per_video: N clips uniformly spaced over the whole video (first at frame 0,
            last ending at the last frame; N = 1: the middle clip).
        clip_hop: sliding clips starting every ``clip_hop`` video frames.
        Neither: one clip from frame 0 (the video's length is not probed).
    """

    num_frames: int
    frame_stride: int = 1
    clips_per_video: int | None = None
    clip_hop: int | None = None

    @property
    def expands(self) -> bool:
        return self.clips_per_video is not None or self.clip_hop is not None

    @property
    def span(self) -> int:
        """Video frames one clip covers."""
        return (self.num_frames - 1) * self.frame_stride + 1


def clip_starts(frame_count: int, sampling: ClipSampling) -> list[int]:
    """Start frames of the clips ``sampling`` places in a video of ``frame_count`` frames.

    Raises:
        ValueError: the video is shorter than one clip.
    """
    last = frame_count - sampling.span  # the last start whose clip fits
    if last < 0:
        raise ValueError(f"too few frames: a clip needs {sampling.span} video frames "
                         f"({sampling.num_frames} × stride {sampling.frame_stride}), the video "
                         f"has {frame_count}")
    if sampling.clip_hop is not None:
        return list(range(0, last + 1, sampling.clip_hop))
    n = sampling.clips_per_video or 1
    if n == 1:
        return [last // 2]
    return sorted({round(i * last / (n - 1)) for i in range(n)})


def video_clips(video: str, sampling: ClipSampling, label: int | None = None,
                boxes: tuple | None = None, frame_range: tuple[int, int] | None = None
                ) -> Iterator[ClipRef | ErrorRecord]:
    """The clips of one video (its length probed once); an unreadable video is one
    ErrorRecord (stage ``list``)."""
    from transforms.decode import ClipError, video_frame_count

    try:
        starts = clip_starts(video_frame_count(video), sampling)
    except (ClipError, ValueError) as exc:
        yield ErrorRecord.of(make_clip_id(video, 0, sampling.num_frames, sampling.frame_stride),
                             video, "list", ClipError(f"{video}: {exc}")
                             if not str(exc).startswith(video) else exc)
        return
    for start in starts:
        yield ClipRef(make_clip_id(video, start, sampling.num_frames, sampling.frame_stride),
                      video, start, label, boxes, frame_range)


def list_clips(spec: str, num_frames: int, frame_stride: int = 1,
               class_names: Sequence[str] | None = None, clips_per_video: int | None = None,
               clip_hop: int | None = None) -> Iterator[ClipRef | ErrorRecord]:
    """Everything ``--input`` names, as ClipRefs (and ErrorRecords for bad manifest rows).

    A clip listed twice (same video, start, length) is explained once; the repeat becomes an
    ErrorRecord, so that clips in = clips written + clips dead-lettered still holds.

    Raises:
        ValueError: the input names nothing (missing manifest, empty directory or glob).
    """
    seen: set[str] = set()
    sampling = ClipSampling(num_frames, frame_stride, clips_per_video, clip_hop)
    for item in _list_all(spec, sampling, class_names):
        if isinstance(item, ClipRef):
            if item.clip_id in seen:
                item = ErrorRecord(item.clip_id + "-dup", item.video, "list", "DuplicateClip",
                                   f"{item.video} from frame {item.start_frame} is listed "
                                   "more than once; explained once", item.start_frame)
            seen.add(getattr(item, "clip_id", ""))
        yield item


def _list_all(spec: str, sampling: ClipSampling, class_names: Sequence[str] | None
              ) -> Iterator[ClipRef | ErrorRecord]:
    if is_manifest(spec):
        if not FileSystems.exists(spec):
            raise ValueError(f"--input manifest {spec} does not exist")
        yield from read_manifest(spec, sampling.num_frames, sampling.frame_stride, class_names,
                                 sampling)
        return
    videos = list_videos(spec)
    if not videos:
        raise ValueError(f"--input {spec} names no video files ({', '.join(VIDEO_EXTENSIONS)})")
    for video in videos:
        if sampling.expands:
            yield from video_clips(video, sampling)
        else:
            yield ClipRef(make_clip_id(video, 0, sampling.num_frames, sampling.frame_stride),
                          video)


def missing_methods(ref: ClipRef, methods: Sequence[str],
                    done: Mapping[str, Collection[str]]) -> tuple[str, ...]:
    """The requested methods ``--output`` does not hold yet for this clip, in order."""
    have = done.get(ref.clip_id, ())
    return tuple(m for m in methods if m not in have)


class ListClips(beam.PTransform):
    """``--input`` → PCollection of ClipRef (main) and ErrorRecord (tag ``errors``).

    The listing runs on a worker (so remote file systems are listed where they are read) and
    is followed by a Reshuffle so that clips spread over workers (without it, fusion would
    keep every clip on the worker that listed them). Clips whose every method is in ``done``
    are skipped (counted, not emitted); a clip with some methods done carries the missing ones.

    Args:
        sampling: which clips of each video.
        methods: the requested methods; ``done``: clip id → methods already in ``--output``.
    """

    def __init__(self, spec: str, sampling: ClipSampling,
                 class_names: Sequence[str] | None = None, methods: Sequence[str] = (),
                 done: Mapping[str, Collection[str]] | None = None,
                 filesystems: FileSystemsOptions = NO_OPTIONS) -> None:
        super().__init__()
        self.filesystems = filesystems
        self.spec, self.sampling = spec, sampling
        self.class_names = list(class_names) if class_names else None
        self.methods = tuple(methods)
        self.done = {k: frozenset(v) for k, v in (done or {}).items()}

    def expand(self, pbegin):
        s = self.sampling

        def emit(spec):
            self.filesystems.apply()
            counter = beam.metrics.Metrics.counter
            for item in list_clips(spec, s.num_frames, s.frame_stride, self.class_names,
                                   s.clips_per_video, s.clip_hop):
                counter("vidxai", "clips_in").inc()
                if isinstance(item, ErrorRecord):
                    counter("vidxai", "clips_failed").inc()
                    yield beam.pvalue.TaggedOutput("errors", item)
                    continue
                missing = missing_methods(item, self.methods, self.done)
                if self.methods and not missing:
                    counter("vidxai", "clips_skipped").inc()
                    continue
                if self.methods and missing != self.methods:
                    item = dataclasses.replace(item, methods=missing)
                yield item

        listed = (pbegin
                  | "Input" >> beam.Create([self.spec])
                  | "Expand" >> beam.FlatMap(emit).with_outputs("errors", main="clips"))
        clips = listed.clips | "Spread" >> beam.Reshuffle()
        return clips, listed.errors
