"""The sink: typed per-clip results and dead letters → Parquet files committed by rename.

Layout under ``--output`` (Hive-style partitions, so pyarrow and DuckDB prune by model and
method; partition values are URI-encoded, e.g. ``:`` → ``%3A``):

``saliency/model=M/method=X/part-K.parquet``: one row per clip × method, the map as
    ``fixed_shape_tensor`` (float16 by default; ``--saliency-dtype``, ``--saliency-pool``).
``metrics/model=M/method=X/part-K.parquet``: one row per clip × method (joins to saliency on
    clip_id + method + config_hash + weights_sha256). A metrics row is the *commit record* of
    its identity: a clip × method is done exactly when its metrics row exists.
``errors/part-K.parquet``: one row per dead-lettered clip per run.

Commit protocol (exactly-once; docs/OPERATIONS.md): a worker buffers finished clips and
flushes every ``clips_per_file`` clips (or ``max_file_bytes`` of maps) and at the end of each
bundle. A flush commits each file atomically, all saliency files first, then the metrics
files: on a file system by writing a hidden ``.inprogress-*`` name in its final directory and
renaming it into place; on an object store (``s3://``, ``gs://``), where an upload is atomic
and a rename is a copy plus a delete, by uploading it under its final name. ``K`` is a hash of
the flush's row identities, so a retried flush rewrites the same names with the same rows.
Readers (``pipeline.outputs``, pyarrow, DuckDB globs of ``*.parquet``) never see a partial
file; a crash can leave saliency files whose metrics twin (same relative path) is missing —
the next run deletes those orphans before listing what is done.

The rows are built here and nowhere else, from :class:`~transforms.records.ClipResult` /
:class:`~transforms.records.ErrorRecord`; column meanings are documented in
docs/USER_GUIDE.md ("Outputs").
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.encoding import encode_map, pool_map, stored_dtype
from transforms.records import ClipResult, ErrorRecord
from transforms.remote import NO_OPTIONS, FileSystemsOptions, scheme

PARTITIONS = ("model", "method")  # directory levels of saliency/ and metrics/
INPROGRESS = ".inprogress-"  # prefix of files being written (hidden from every reader)
OBJECT_STORES = ("s3", "gs")  # one upload is atomic there, a rename is a copy plus a delete
SALIENCY_BATCH = 8  # Parquet row group of maps: a 16×224×224 float16 map is 1.6 MB

ERROR_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video", pa.string()), ("start_frame", pa.int32()),
    ("stage", pa.string()), ("error_type", pa.string()), ("message", pa.string()),
    ("model", pa.string()), ("weights_sha256", pa.string()), ("run_id", pa.string()),
])


def saliency_schema(shape: tuple[int, int, int], encoding: str = "float16") -> pa.Schema:
    """Schema of ``saliency/`` files for stored maps of ``shape`` (T', H', W')."""
    value = pa.from_numpy_dtype(stored_dtype(encoding))
    return pa.schema([
        ("clip_id", pa.string()), ("video", pa.string()), ("start_frame", pa.int32()),
        ("num_frames", pa.int32()), ("frame_stride", pa.int32()),
        ("weights_sha256", pa.string()),
        ("target_class", pa.int32()), ("target_name", pa.string()),
        ("target_source", pa.string()), ("map_shape", pa.list_(pa.int32())),
        ("map_min", pa.float32()), ("map_max", pa.float32()),
        ("encoding", pa.string()), ("pool", pa.list_(pa.int32())),
        ("saliency", pa.fixed_shape_tensor(value, list(shape))),
        ("config_hash", pa.string()), ("run_id", pa.string()),
    ])


METRICS_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video", pa.string()), ("start_frame", pa.int32()),
    ("weights_sha256", pa.string()),
    ("label", pa.int32()), ("label_name", pa.string()),
    ("label_prob", pa.float32()), ("predicted", pa.int32()), ("predicted_name", pa.string()),
    ("predicted_prob", pa.float32()), ("correct", pa.bool_()),
    ("target_class", pa.int32()), ("target_prob", pa.float32()),
    ("top5", pa.list_(pa.struct([("class", pa.int32()), ("name", pa.string()),
                                  ("prob", pa.float32())]))),
    ("deletion_auc", pa.float32()), ("insertion_auc", pa.float32()),
    ("deletion_curve", pa.list_(pa.float32())), ("insertion_curve", pa.list_(pa.float32())),
    ("spt_hits", pa.int32()), ("spt_frames", pa.int32()), ("spt_rate", pa.float32()),
    ("frame_range", pa.list_(pa.int32())), ("tpt_hit", pa.bool_()),
    ("t_mass_in_range", pa.float32()), ("t_above_median_share", pa.float32()),
    ("forward_passes", pa.int32()), ("backward_passes", pa.int32()), ("seconds", pa.float32()),
    ("metric_forward_passes", pa.int32()), ("metric_seconds", pa.float32()),
    ("config_hash", pa.string()), ("run_id", pa.string()),
])


@dataclass(frozen=True)
class RunInfo:
    """Per-run values written next to every row.

    Attributes:
        config_hashes: ``(method, config hash)`` pairs: each method's hash of the options
            that change its maps (``pipeline.config.RunConfig.config_hash``).
        run_id: this run's id (rows say which run wrote them; not part of their identity).
    """

    model: str
    weights_sha256: str
    config_hashes: tuple[tuple[str, str], ...]
    frame_stride: int
    run_id: str = ""

    def config_hash(self, method: str) -> str:
        return dict(self.config_hashes)[method]


@dataclass(frozen=True)
class StoreOptions:
    """How maps are stored and how large files get.

    Attributes:
        encoding: ``float32`` | ``float16`` | ``uint8`` (the error of each:
            docs/BENCHMARKS.md, ``encoding_error``).
        pool: ``(pool_t, pool_s)`` mean pooling before storing; (1, 1): none.
        clips_per_file: a worker commits after this many clips (and at each bundle's end).
        max_file_bytes: ... or once its buffered maps reach this many bytes.
    """

    encoding: str = "float16"
    pool: tuple[int, int] = (1, 1)
    clips_per_file: int = 64
    max_file_bytes: int = 256 << 20

    def stored_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        pt, ps = self.pool
        return shape[0] // pt, shape[1] // ps, shape[2] // ps


# --- rows ------------------------------------------------------------------------------------


def saliency_rows(result: ClipResult, info: RunInfo, store: StoreOptions = StoreOptions()
                  ) -> list[dict]:
    """The ``saliency/`` rows of one clip (one per method), with ``method`` for partitioning."""
    ref = result.ref
    rows = []
    for m in result.methods:
        lo, hi = float(m.saliency.min()), float(m.saliency.max())
        pooled = m.saliency if store.pool == (1, 1) else pool_map(m.saliency, store.pool)
        rows.append({
            "clip_id": ref.clip_id, "video": ref.video, "start_frame": ref.start_frame,
            "num_frames": result.num_frames, "frame_stride": info.frame_stride,
            "method": m.method, "weights_sha256": info.weights_sha256,
            "target_class": result.target.index, "target_name": result.target.name,
            "target_source": result.target_source, "map_shape": list(pooled.shape),
            "map_min": lo, "map_max": hi, "encoding": store.encoding,
            "pool": list(store.pool),
            "saliency": encode_map(pooled, store.encoding, lo, hi).ravel(),
            "config_hash": info.config_hash(m.method), "run_id": info.run_id,
        })
    return rows


def metrics_rows(result: ClipResult, info: RunInfo) -> list[dict]:
    """The ``metrics/`` rows of one clip (one per method; metric columns null when off)."""
    ref, label = result.ref, result.label
    rows = []
    for m in result.methods:
        row = {
            "clip_id": ref.clip_id, "video": ref.video, "start_frame": ref.start_frame,
            "method": m.method, "weights_sha256": info.weights_sha256,
            "label": None if label is None else label.index,
            "label_name": None if label is None else label.name,
            "label_prob": None if label is None else label.prob,
            "predicted": result.predicted.index, "predicted_name": result.predicted.name,
            "predicted_prob": result.predicted.prob,
            "correct": None if label is None else label.index == result.predicted.index,
            "target_class": result.target.index, "target_prob": result.target.prob,
            "top5": [{"class": c.index, "name": c.name, "prob": c.prob} for c in result.top5],
            "forward_passes": m.forward_passes, "backward_passes": m.backward_passes,
            "seconds": m.seconds, "config_hash": info.config_hash(m.method),
            "run_id": info.run_id,
        }
        mm = m.metrics
        row.update({
            "deletion_auc": mm and mm.deletion_auc, "insertion_auc": mm and mm.insertion_auc,
            "deletion_curve": mm and list(mm.deletion_curve),
            "insertion_curve": mm and list(mm.insertion_curve),
            "spt_hits": mm and mm.spt_hits, "spt_frames": mm and mm.spt_frames,
            "spt_rate": mm and mm.spt_rate,
            "frame_range": None if result.frame_range is None else list(result.frame_range),
            "tpt_hit": mm and mm.tpt_hit, "t_mass_in_range": mm and mm.t_mass_in_range,
            "t_above_median_share": mm and mm.t_above_median_share,
            "metric_forward_passes": mm and mm.forward_passes,
            "metric_seconds": mm and mm.seconds,
        })
        rows.append(row)
    return rows


def error_row(error: ErrorRecord, info: RunInfo) -> dict:
    """The ``errors/`` row of a dead letter."""
    return {"clip_id": error.clip_id, "video": error.video, "start_frame": error.start_frame,
            "stage": error.stage, "error_type": error.error_type, "message": error.message,
            "model": info.model, "weights_sha256": info.weights_sha256, "run_id": info.run_id}


# --- paths -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputPaths:
    """Where a run writes (all under ``--output``, a directory or FileSystems URI)."""

    root: str

    def join(self, *parts: str) -> str:
        return FileSystems.join(self.root, *parts)

    @property
    def saliency(self) -> str:
        return self.join("saliency")

    @property
    def metrics(self) -> str:
        return self.join("metrics")

    @property
    def errors(self) -> str:
        return self.join("errors")

    @property
    def run_json(self) -> str:
        return self.join("run.json")

    @property
    def runs(self) -> str:
        """The run history: one ``<run_id>.json`` per run, never overwritten."""
        return self.join("runs")

    def tables(self) -> list[str]:
        return [self.saliency, self.metrics, self.errors]


def partition_dir(table: str, model: str, method: str) -> str:
    """``table/model=<model>/method=<method>`` with URI-encoded values."""
    return FileSystems.join(table, f"model={quote(model, safe='')}",
                            f"method={quote(method, safe='')}")


def identity_key(identities: Iterable[tuple[str, ...]]) -> str:
    """16 hex digits naming a file by the identities of its rows (order-free)."""
    text = "\n".join(sorted("|".join(i) for i in identities))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# --- committing ------------------------------------------------------------------------------


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the whole file or nothing.

    On an object store (``s3://``, ``gs://``) one upload is atomic (the object appears when
    the upload completes) while a rename is a copy plus a delete: the file is uploaded under
    its final name. Elsewhere it is written to a hidden temporary name and renamed.
    """
    if scheme(path) in OBJECT_STORES:
        with FileSystems.create(path) as fh:
            fh.write(data)
        return
    directory, name = path.rsplit("/", 1)
    tmp = FileSystems.join(directory, f"{INPROGRESS}{uuid.uuid4().hex[:12]}-{name}.tmp")
    with FileSystems.create(tmp) as fh:
        fh.write(data)
    FileSystems.rename([tmp], [path])


def write_parquet_atomic(path: str, table: pa.Table, row_group_size: int | None = None
                         ) -> None:
    """Write ``table`` to ``path`` as one Parquet file, atomically (:func:`write_atomic`)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    write_atomic(path, buf.getvalue())


def commit_results(paths: OutputPaths, info: RunInfo, store: StoreOptions,
                   results: list[ClipResult]) -> list[str]:
    """Commit the rows of finished clips: all saliency files, then all metrics files.

    Returns:
        The metrics files written (one per method present).
    """
    if not results:
        return []
    sal = defaultdict(list)
    met = defaultdict(list)
    for r in results:
        for row in saliency_rows(r, info, store):
            sal[row.pop("method")].append(row)
        for row in metrics_rows(r, info):
            met[row.pop("method")].append(row)
    key = identity_key((row["clip_id"], method, row["config_hash"], row["weights_sha256"])
                       for method, rows in met.items() for row in rows)
    name = f"part-{key}.parquet"
    shape = tuple(results[0].methods[0].saliency.shape)
    schema = saliency_schema(store.stored_shape(shape), store.encoding)
    for method, rows in sorted(sal.items()):
        write_parquet_atomic(FileSystems.join(partition_dir(paths.saliency, info.model, method),
                                              name),
                             pa.Table.from_pylist(rows, schema), SALIENCY_BATCH)
    written = []
    for method, rows in sorted(met.items()):
        path = FileSystems.join(partition_dir(paths.metrics, info.model, method), name)
        write_parquet_atomic(path, pa.Table.from_pylist(rows, METRICS_SCHEMA))
        written.append(path)
    return written


def commit_errors(paths: OutputPaths, info: RunInfo, errors: list[ErrorRecord]) -> str | None:
    """Commit dead letters as one ``errors/`` file named by the run and the clips."""
    if not errors:
        return None
    key = identity_key((e.clip_id, e.stage, info.run_id) for e in errors)
    path = FileSystems.join(paths.errors, f"part-{key}.parquet")
    write_parquet_atomic(path, pa.Table.from_pylist([error_row(e, info) for e in errors],
                                                    ERROR_SCHEMA))
    return path


def _map_bytes(result: ClipResult, store: StoreOptions) -> int:
    itemsize = stored_dtype(store.encoding).itemsize
    pt, ps = store.pool
    return sum(m.saliency.size // (pt * ps * ps) * itemsize for m in result.methods)


class _CommitFn(beam.DoFn):
    """Buffers records and commits them in files; emits each committed clip's id."""

    def __init__(self, commit, store: StoreOptions, weigh=None,
                 filesystems: FileSystemsOptions = NO_OPTIONS) -> None:
        self._commit, self._store, self._weigh = commit, store, weigh
        self._filesystems = filesystems

    def setup(self):
        self._filesystems.apply()

    def start_bundle(self):
        self._buffer, self._bytes = [], 0

    def process(self, item):
        self._buffer.append(item)
        self._bytes += self._weigh(item) if self._weigh else 0
        if (len(self._buffer) >= self._store.clips_per_file
                or self._bytes >= self._store.max_file_bytes):
            yield from self._flush()

    def finish_bundle(self):
        for clip_id in self._flush():
            yield WindowedValue(clip_id, MIN_TIMESTAMP, [GlobalWindow()])

    def _flush(self):
        items, self._buffer, self._bytes = self._buffer, [], 0
        if items:
            self._commit(items)
        return [item.ref.clip_id if isinstance(item, ClipResult) else item.clip_id
                for item in items]


@dataclass
class _Committer:
    """Picklable commit callables (one per table kind)."""

    paths: OutputPaths
    info: RunInfo
    store: StoreOptions = field(default_factory=StoreOptions)

    def results(self, items: list[ClipResult]) -> None:
        commit_results(self.paths, self.info, self.store, items)
        beam.metrics.Metrics.counter("vidxai", "clips_written").inc(len(items))
        beam.metrics.Metrics.counter("vidxai", "files_committed").inc()

    def errors(self, items: list[ErrorRecord]) -> None:
        commit_errors(self.paths, self.info, items)

    def weigh(self, item: ClipResult) -> int:
        return _map_bytes(item, self.store)


class WriteResults(beam.PTransform):
    """``(results, errors) | WriteResults(...)`` → (committed clip ids, committed error ids).

    Args:
        paths: the output locations.
        info: values written next to every row.
        store: map encoding and file bounds.
        filesystems: the pipeline's FileSystems options, set on the worker first.
    """

    def __init__(self, paths: OutputPaths, info: RunInfo, store: StoreOptions,
                 filesystems: FileSystemsOptions = NO_OPTIONS) -> None:
        super().__init__()
        self.paths, self.info, self.store = paths, info, store
        self.filesystems = filesystems

    def expand(self, pcolls):
        results, errors = pcolls
        c, fs = _Committer(self.paths, self.info, self.store), self.filesystems
        written = results | "CommitResults" >> beam.ParDo(_CommitFn(c.results, self.store,
                                                                    c.weigh, fs))
        failed = errors | "CommitErrors" >> beam.ParDo(_CommitFn(c.errors, self.store,
                                                                 filesystems=fs))
        return written, failed
