"""Video-TCAV stages: concept clips → cached layer features → TCAV rows (Beam wrappers thin).

Cache under ``OUT/concepts_cache/`` (Hive-style, one file per flush, committed by rename):

``features/model=M/layer=L/part-K.parquet``   one row per clip × variant (``dynamic`` |
    ``static``): pooled activations ``values`` (D,), and for clips whose class is tested the
    pooled class-logit gradients ``grads`` (K·D) of ``classes`` (K).

Every row carries ``cache_key``: a hash of the weights, the network's preprocessing, clip
length, size and pool; a clip's identity is its ``clip_id`` (video URI, start, length, stride)
plus the variant (and, for a discovered proposal, the tube). A re-run with the same key reads
these rows instead of recomputing them, so adding one concept computes only that concept's
clips. The maths is :mod:`transforms.tcav`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms import tcav
from transforms.decode import decode_clip, resize_and_crop
from transforms.model_handler import VideoModelHandler
from transforms.records import ClipRef, ErrorRecord
from transforms.sink import identity_key, write_parquet_atomic

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FEATURES = "features"


@dataclass(frozen=True)
class ConceptClip:
    """A clip whose layer features are needed.

    Attributes:
        ref: the clip (``clip_id``: identity; ``video``: a video, an image, or for a tube
            proposal the video it was cut from).
        variants: ``dynamic`` (the clip) and / or ``static`` (its middle frame repeated).
        classes: class indices whose logit gradients are needed (the clip is tested for them).
        tube: for a discovered proposal, the tube index whose region is kept (-1: none).
        reverse: feed the clip reversed in time.
    """

    ref: ClipRef
    variants: tuple[str, ...] = ("dynamic",)
    classes: tuple[int, ...] = ()
    tube: int = -1
    reverse: bool = False


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed (identical settings → identical cache rows)."""

    model: str
    layers: tuple[str, ...]
    pool: str
    num_frames: int
    size: int
    resize_ratio: float
    frame_stride: int
    cache_key: str
    mean: tuple[float, float, float]
    batch_size: int = 8
    # tube proposals (--discover): anchor stride, box side, partners, tubes per clip
    tube_stride: int = 4
    box_size: int = 8
    topk: int = 3
    tubes_per_clip: int = 3


def decode_frames(clip: ConceptClip, s: FeatureSettings) -> np.ndarray:
    """uint8 (T, H, W, 3) of a concept clip: a video's frames, or a still image repeated."""
    path = clip.ref.video
    if path.lower().endswith(IMAGE_EXTENSIONS):
        import cv2

        with FileSystems.open(path) as fh:
            data = np.frombuffer(fh.read(), dtype=np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a readable image")
        crop, _, _ = resize_and_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), s.size,
                                     s.resize_ratio)
        frames = np.repeat(crop[None], s.num_frames, axis=0)
    else:
        frames = decode_clip(path, clip.ref.start_frame, s.num_frames, s.size, s.resize_ratio,
                             s.frame_stride).frames
    return frames[::-1].copy() if clip.reverse else frames


def proposal_frames(frames: np.ndarray, s: FeatureSettings) -> list[tuple[int, np.ndarray]]:
    """The top moving tubes of a clip as region clips: (tube index, uint8 (T, H, W, 3))."""
    from transforms.tubes import tubes_from_frames

    tubes = tubes_from_frames(frames, s.tube_stride, (s.box_size, s.box_size), s.topk)
    picked = tcav.top_moving_tubes(tubes.tracks, tubes.valid, s.tubes_per_clip, s.box_size)
    return [(i, tcav.region_clip(frames, tcav.tube_region(tubes.boxes, i, tubes.partners,
                                                          tubes.frame_size), s.mean))
            for i in picked]


def proposal_id(clip_id: str, tube: int) -> str:
    return f"{clip_id}#tube{tube}"


def feature_rows(items: Sequence[tuple[ConceptClip, str, np.ndarray]], scorer,
                 s: FeatureSettings) -> dict[str, list[dict]]:
    """Features of (clip, variant, uint8 frames) items → layer → rows.

    One forward per clip (its dynamic and static variants together): a clip's features must
    not depend on which other clips a bundle put beside it. Batched with others, float sums
    change with the batch, and the Reshuffle before batching makes the batches differ from run
    to run; the discovered concepts' k-means and borderline significance then changed between
    identical runs (how often: docs/DESIGN.md, Video-TCAV).
    """
    rows: dict[str, list[dict]] = defaultdict(list)
    per_clip: dict[tuple[str, int], list] = defaultdict(list)
    for item in items:
        per_clip[(item[0].ref.clip_id, item[0].tube)].append(item)
    for batch in per_clip.values():
        classes = sorted({k for clip, variant, _ in batch if variant == "dynamic"
                          for k in clip.classes})
        xs = torch.stack([scorer.to_input(f) for _, _, f in batch])
        feats = tcav.layer_features(scorer.model, scorer.logits, xs, s.layers, classes, s.pool)
        for layer, (acts, grads) in feats.items():
            for b, (clip, variant, _) in enumerate(batch):
                wanted = clip.classes if variant == "dynamic" else ()
                g = (grads[b, [classes.index(k) for k in wanted]].ravel()
                     if wanted else np.zeros(0, np.float32))
                rows[layer].append({"clip_id": clip.ref.clip_id, "variant": variant,
                                    "video": clip.ref.video, "tube": clip.tube,
                                    "cache_key": s.cache_key, "values": acts[b],
                                    "classes": list(wanted), "grads": g})
    return rows


FEATURE_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("variant", pa.string()), ("video", pa.string()),
    ("tube", pa.int32()), ("cache_key", pa.string()), ("values", pa.list_(pa.float32())),
    ("classes", pa.list_(pa.int32())), ("grads", pa.list_(pa.float32())),
])


def layer_dir(root: str, model: str, layer: str) -> str:
    """``root/features/model=<model>/layer=<layer>`` (values URI-encoded)."""
    return FileSystems.join(root, FEATURES, f"model={quote(model, safe='')}",
                            f"layer={quote(layer, safe='')}")


def commit_features(root: str, model: str, rows: dict[str, list[dict]]) -> None:
    """One file per layer, named by its rows' identities (a retried flush rewrites it)."""
    for layer, items in rows.items():
        table = pa.Table.from_pylist(
            [{**r, "values": np.asarray(r["values"], np.float32),
              "grads": np.asarray(r["grads"], np.float32)} for r in items], FEATURE_SCHEMA)
        key = identity_key((r["clip_id"], r["variant"], r["cache_key"]) for r in items)
        write_parquet_atomic(FileSystems.join(layer_dir(root, model, layer),
                                              f"part-{key}.parquet"), table)


def cached_files(directory: str) -> list[str]:
    """Committed Parquet files under ``directory`` (hidden temporaries left out)."""
    try:
        found = [m.path for r in FileSystems.match([FileSystems.join(directory, "**.parquet")])
                 for m in r.metadata_list]
    except Exception:  # noqa: BLE001 - a missing directory matches nothing
        return []
    return sorted(p for p in found if not p.rsplit("/", 1)[-1].startswith((".", "_")))


def read_features(root: str, model: str, layer: str, cache_key: str,
                  columns: Sequence[str] = ("clip_id", "variant", "values", "classes", "grads")
                  ) -> Iterator[dict]:
    """Cached rows of one layer with ``cache_key`` (streamed file by file)."""
    for path in cached_files(layer_dir(root, model, layer)):
        with FileSystems.open(path) as fh:
            table = pq.read_table(pa.BufferReader(fh.read()),
                                  columns=list({*columns, "cache_key"}))
        for row in table.to_pylist():
            if row["cache_key"] == cache_key:
                yield row


# --- Beam wrappers ---


class FeaturesFn(beam.DoFn):
    """Batches of ConceptClip → cache files; emits the number of clips committed (at bundle
    end) and an ErrorRecord (tag ``errors``) per clip that cannot be decoded."""

    def __init__(self, handler: VideoModelHandler, settings: FeatureSettings, root: str,
                 flush_every: int = 64) -> None:
        self.handler, self.s, self.root, self.flush_every = handler, settings, root, flush_every

    def setup(self):
        from apache_beam.utils import shared

        self._scorer = shared.Shared().acquire(self.handler.load_model,
                                               tag=self.handler.share_tag())

    def start_bundle(self):
        self._rows: dict[str, list[dict]] = defaultdict(list)
        self._clips = 0

    def process(self, batch: list[ConceptClip]):
        items = []
        for clip in batch:
            try:
                frames = decode_frames(clip, self.s)
                if clip.tube >= 0:
                    regions = dict(proposal_frames(frames, self.s))
                    if clip.tube not in regions:
                        raise ValueError(f"tube {clip.tube} is not among the clip's top tubes")
                    frames = regions[clip.tube]
                for variant in clip.variants:
                    items.append((clip, variant,
                                  tcav.static_twin(frames) if variant == "static" else frames))
            except Exception as exc:  # noqa: BLE001 - a bad clip is a dead letter
                log.warning("concept clip %s failed: %s", clip.ref.video, exc)
                yield beam.pvalue.TaggedOutput("errors", ErrorRecord.of(
                    clip.ref.clip_id, clip.ref.video, "concept_features", exc,
                    clip.ref.start_frame))
        for layer, rows in feature_rows(items, self._scorer, self.s).items():
            self._rows[layer].extend(rows)
        self._clips += len({c.ref.clip_id for c, _, _ in items})
        beam.metrics.Metrics.counter("vidxai", "concept_clips_featured").inc(
            len({c.ref.clip_id for c, _, _ in items}))
        if self._clips >= self.flush_every:
            self._flush()

    def _flush(self) -> int:
        n, self._clips = self._clips, 0
        if self._rows:
            commit_features(self.root, self.s.model, self._rows)
        self._rows = defaultdict(list)
        return n

    def finish_bundle(self):
        yield WindowedValue(self._flush(), MIN_TIMESTAMP, [GlobalWindow()])


class ProposeFn(beam.DoFn):
    """An input clip → one ConceptClip per top moving tube (its region kept, the rest the
    dataset mean); an undecodable clip yields nothing (its own features row reports it)."""

    def __init__(self, settings: FeatureSettings) -> None:
        self.s = settings

    def process(self, clip: ConceptClip):
        import dataclasses

        try:
            frames = decode_frames(clip, self.s)
            tubes = [i for i, _ in proposal_frames(frames, self.s)]
        except Exception as exc:  # noqa: BLE001
            log.warning("no proposals from %s: %s", clip.ref.video, exc)
            return
        for i in tubes:
            ref = dataclasses.replace(clip.ref, clip_id=proposal_id(clip.ref.clip_id, i))
            yield ConceptClip(ref, ("dynamic", "static"), (), i)
