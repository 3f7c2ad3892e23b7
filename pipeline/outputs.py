"""The one reader of a run's Parquet outputs; after a run, ``run.json`` and a summary table.

Two ways to read a table directory (``metrics/``, ``saliency/``, ``errors/``, ``concepts/``),
on the same listing of committed files (:func:`table_files`) and the same file opening
(:func:`read_parquet`):

- :func:`iter_tables` / :func:`read_table`: whole files, partition columns added; a damaged
  file raises (the job's reads: recovery, done identities, counts).
- :class:`Output`: a run's output for the report, in either layout (flat, or Hive
  ``model=<m>/method=<meth>/`` directories, values URI-encoded): each file's footer and schema
  checked once, damaged files left out and named in :attr:`Output.unreadable` (no row is
  dropped silently), rows streamed file by file, column-projected and filtered
  (:meth:`Output.scan`), so nothing holds more than one file's matching rows at a time.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.storage import arrow_filesystem
from transforms.sink import ERROR_SCHEMA, METRICS_SCHEMA, OutputPaths, saliency_schema


def table_files(directory: str) -> list[str]:
    """Committed ``*.parquet`` files under ``directory`` (any depth), sorted, as paths in the
    form ``directory`` was given (local path or URI); files being written (``.inprogress-*``)
    and other hidden files (``.``/``_`` names, at any level) are not committed."""
    fs, base = arrow_filesystem(directory)
    try:  # a missing directory, prefix or bucket lists as empty; anything else is an error
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise ValueError(f"{directory} cannot be listed: {one_line(exc)}") from None
    prefix = directory.rstrip("/")
    found = []
    for info in infos:
        rel = info.path[len(base):].lstrip("/")
        if (info.type == pafs.FileType.File and rel.endswith(".parquet")
                and not any(part.startswith((".", "_")) for part in rel.split("/"))):
            found.append(f"{prefix}/{rel}" if "://" in prefix else os.path.join(prefix, rel))
    return sorted(found)


def partition_values(directory: str, path: str) -> dict[str, str]:
    """``{"model": ..., "method": ...}`` from a file's ``key=value`` directories."""
    rel = path[len(directory):].strip("/").split("/")[:-1]
    return {k: unquote(v) for k, v in (part.split("=", 1) for part in rel if "=" in part)}


def read_parquet(path: str) -> pq.ParquetFile:
    """One Parquet file of an output, local or remote, opened through pyarrow's filesystem
    (only the footer is read here; columns are read on demand)."""
    fs, p = arrow_filesystem(path)
    return pq.ParquetFile(fs.open_input_file(p))


def iter_tables(directory: str, columns: list[str] | None = None,
                where: dict[str, str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """``(path, table)`` per committed file, partition columns added as strings.

    Args:
        columns: the columns to read (partition columns included or not); None: all.
        where: partition values a file must have (e.g. ``{"method": "aosa"}``): others are
            not opened.
    """
    for path in table_files(directory):
        parts = partition_values(directory, path)
        if where and any(parts.get(k) != v for k, v in where.items()):
            continue
        pf = read_parquet(path)
        names = pf.schema_arrow.names
        wanted = None if columns is None else [c for c in columns if c in names]
        table = pf.read(columns=wanted)
        for key, value in parts.items():
            if (columns is None or key in columns) and key not in table.column_names:
                table = table.append_column(key, pa.array([value] * table.num_rows,
                                                          pa.string()))
        yield path, table


def exists(directory: str) -> bool:
    """True when ``directory`` (local or remote) holds anything."""
    fs, base = arrow_filesystem(directory)
    try:
        if fs.get_file_info(base).type != pafs.FileType.NotFound:
            return True
        # object stores have no directories: a prefix exists when something is under it
        return bool(fs.get_file_info(pafs.FileSelector(base, recursive=True,
                                                       allow_not_found=True)))
    except OSError as exc:
        raise ValueError(f"{directory} cannot be read: {one_line(exc)}") from None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, at most ``limit`` characters (its type if empty)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def read_table(directory: str, columns: list[str] | None = None,
               where: dict[str, str] | None = None) -> pa.Table | None:
    """Every committed file under ``directory`` as one table (None when there are none)."""
    tables = [t for _, t in iter_tables(directory, columns, where)]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


# --- The report's reader: checked files, streamed scans ---------------------------------------


class NoOutput(ValueError):
    """The directory is not a run's output (missing, or without the table asked for)."""


@dataclass(frozen=True)
class Unreadable:
    """A file of an output the report could not read, and why (its rows are left out)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} cannot be read ({self.reason}): its rows are not in this report"


# The sink's schemas: a file's columns must have these types (older files may lack some).
# Saliency maps vary in shape and dtype (--size, --saliency-dtype): only their name is checked.
EXPECTED = {"metrics": METRICS_SCHEMA, "errors": ERROR_SCHEMA,
            "saliency": saliency_schema((1, 1, 1))}
LOOSE = frozenset({"saliency"})
# Columns every file of a table has had: a file without them belongs to another table.
REQUIRED = {"metrics": ("clip_id", "deletion_auc"), "saliency": ("clip_id", "saliency"),
            "errors": ("clip_id", "error_type")}
CHECK_THREADS = 16  # footers are read in parallel (one small read each, remote or local)


def check_file(path: str, table: str) -> tuple[pa.Schema | None, str]:
    """Open ``path``'s footer and check its schema against ``table``'s.

    Returns:
        (the file's Arrow schema, "") when it is readable, else (None, the reason in one line).
    """
    try:
        schema = read_parquet(path).schema_arrow
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is named, not raised
        return None, one_line(exc, 200)
    expected = EXPECTED[table]
    for name in REQUIRED[table]:
        if name not in schema.names:
            return None, f"no {name} column: not a {table}/ file"
    for field in schema:
        if field.name in expected.names and field.name not in LOOSE:
            want = expected.field(field.name).type
            if not field.type.equals(want):
                return None, f"column {field.name} is {field.type}, expected {want}"
    return schema, ""


class Output:
    """A run's output opened for reading: each table's files checked once (footer and schema),
    the readable ones read as one dataset, the others kept in :attr:`unreadable`.

    Attributes:
        root: the output directory (local path or URI).
        unreadable: every file found damaged so far (when opened or while read).
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.unreadable: list[Unreadable] = []
        self._tables: dict[str, ds.Dataset] = {}

    def table(self, table: str) -> ds.Dataset:
        """The readable files of ``table`` (``metrics``, ``saliency``, ``errors``).

        Raises:
            NoOutput: one line saying what is missing.
        """
        if table not in self._tables:
            self._tables[table] = self._open(table)
        return self._tables[table]

    def _open(self, table: str) -> ds.Dataset:
        path = FileSystems.join(self.root, table)
        if not exists(self.root):
            raise NoOutput(f"{self.root} does not exist (give a run's --output directory)")
        if not exists(path):
            raise NoOutput(f"{self.root} has no {table}/ table (is it a vidxai run's --output?)")
        files = table_files(path)
        if not files:
            raise NoOutput(f"{path} holds no Parquet files (the run wrote no rows)")
        with ThreadPoolExecutor(min(CHECK_THREADS, len(files))) as pool:
            checked = list(pool.map(lambda f: check_file(f, table), files))
        good = [(f, schema) for f, (schema, _) in zip(files, checked, strict=True) if schema]
        self._name([Unreadable(f, why) for f, (schema, why) in zip(files, checked, strict=True)
                    if schema is None])
        if not good:
            raise NoOutput(f"{path} holds no readable Parquet file ({len(files)} damaged: "
                           f"{self.unreadable[-1]})")
        fs, base = arrow_filesystem(path)
        paths = [arrow_filesystem(f)[1] for f, _ in good]
        dataset = ds.dataset(paths, filesystem=fs, format="parquet", partitioning="hive",
                             partition_base_dir=base)
        try:  # columns of newer files too (the first file's schema alone would hide them)
            schema = pa.unify_schemas([dataset.schema, *(s for _, s in good)])
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. maps of two shapes
            return dataset
        return ds.dataset(paths, schema=schema, filesystem=fs, format="parquet",
                          partitioning="hive", partition_base_dir=base)

    def _name(self, found: Sequence[Unreadable]) -> None:
        known = {u.path for u in self.unreadable}
        self.unreadable += [u for u in found if u.path not in known]

    def scan(self, dataset: ds.Dataset, columns: Sequence[str],
             where: ds.Expression | None = None, batch_size: int = 4096) -> Iterator[pa.Table]:
        """The ``columns`` of the rows matching ``where``, one small table per record batch.

        Read file by file: a file that fails half-way (damaged past its footer) gives no row
        and is named in :attr:`unreadable`. Columns the dataset does not have (an older run's
        schema) are filled with nulls.
        """
        have = [c for c in columns if c in dataset.schema.names]
        missing = [c for c in columns if c not in have]
        for fragment in dataset.get_fragments(filter=where):
            try:
                batches = [b for b in fragment.to_batches(schema=dataset.schema, columns=have,
                                                          filter=where, batch_size=batch_size)
                           if b.num_rows]
            except (OSError, pa.ArrowException) as exc:
                self._name([Unreadable(self._uri(fragment.path),
                                       f"failed while read: {one_line(exc, 200)}")])
                continue
            for batch in batches:
                table = plain(batch)
                for name in missing:
                    table = table.append_column(name, pa.nulls(table.num_rows))
                yield table.select(list(columns))

    def _uri(self, fs_path: str) -> str:
        """A file's path as the user gave the output (``s3://…`` kept)."""
        _, base = arrow_filesystem(self.root)
        rel = fs_path[len(base):].lstrip("/")
        return FileSystems.join(self.root, rel) if "://" in self.root else os.path.join(
            self.root, rel)


def plain(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """Dictionary columns (hive partition values) cast to their value type."""
    table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


def versions() -> dict:
    import apache_beam
    import cv2
    import numpy
    import torch

    return {"python": platform.python_version(), "apache_beam": apache_beam.__version__,
            "torch": torch.__version__, "opencv": cv2.__version__, "numpy": numpy.__version__,
            "pyarrow": pa.__version__}


def counts_from_outputs(out: OutputPaths, run_id: str) -> dict:
    """This run's clip counts read back from the committed tables (the truth, whatever the
    runner said): clips with a metrics row written by ``run_id``, its dead letters."""
    met = read_table(out.metrics, columns=["clip_id", "run_id"])
    written = set() if met is None else {
        c for c, r in zip(met.column("clip_id").to_pylist(), met.column("run_id").to_pylist(),
                          strict=True) if r == run_id}
    err = read_table(out.errors, columns=["clip_id", "run_id"])
    failed = 0 if err is None else sum(r == run_id for r in err.column("run_id").to_pylist())
    return {"clips_written": len(written), "clips_failed": failed}


def write_run_json(out: OutputPaths, info: dict) -> None:
    """``run.json`` (the latest run) and ``runs/<run_id>.json`` (the history, kept)."""
    data = json.dumps(info, indent=2, sort_keys=True, default=str).encode()
    for path in (FileSystems.join(out.runs, f"{info['run_id']}.json"), out.run_json):
        with FileSystems.create(path) as fh:
            fh.write(data)


def run_history(out: OutputPaths) -> list[dict]:
    """Every run's record in ``--output``, oldest first."""
    pattern = FileSystems.join(out.runs, "*.json")
    try:
        paths = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    except Exception:  # noqa: BLE001 - no history yet
        return []
    records = []
    for path in paths:
        with FileSystems.open(path) as fh:
            records.append(json.loads(fh.read()))
    return sorted(records, key=lambda r: r.get("started", ""))


SUMMARY_COLUMNS = ["clip_id", "video", "start_frame", "method", "weights_sha256", "config_hash",
                   "deletion_auc", "insertion_auc", "spt_rate", "seconds", "forward_passes",
                   "top5", "target_class"]
CLIP_LINES = 40  # the per-clip part of the summary lists at most this many clips


def summary_table(out: OutputPaths, info: dict | None = None) -> str:
    """Per-method means of the metrics table, plus the error list, as plain text.

    Args:
        info: a run record (``run.json``): only the rows of its configuration (weights and
            each method's config hash, whichever run wrote them) and its dead letters. None:
            everything in ``--output``.
    """
    lines = []
    metrics = read_table(out.metrics, SUMMARY_COLUMNS)
    if metrics is not None and metrics.num_rows:
        rows = metrics.to_pylist()
        if info is not None:
            hashes = info["config_hashes"]
            rows = [r for r in rows if r["weights_sha256"] == info["weights_sha256"]
                    and hashes.get(r["method"]) == r["config_hash"]]
        by_method = defaultdict(list)
        for r in rows:
            by_method[r["method"]].append(r)
        lines.append(f"{'method':<10} {'clips':>5} {'deletion':>9} {'insertion':>9} "
                     f"{'S-PT':>6} {'s/clip':>7} {'fwd/clip':>8}")
        for method, rs in sorted(by_method.items()):
            spt = [r["spt_rate"] for r in rs if r["spt_rate"] is not None]
            lines.append(
                f"{method:<10} {len(rs):>5} {_mean(r['deletion_auc'] for r in rs):>9.3f} "
                f"{_mean(r['insertion_auc'] for r in rs):>9.3f} "
                f"{(_mean(spt) if spt else float('nan')):>6.3f} "
                f"{_mean(r['seconds'] for r in rs):>7.2f} "
                f"{_mean(r['forward_passes'] for r in rs):>8.0f}")
        lines.append("")
        lines.append(f"{'clip':<40} {'predicted (prob)':<36} {'target':<24}")
        seen = set()
        for r in rows:
            if r["clip_id"] in seen:
                continue
            seen.add(r["clip_id"])
            if len(seen) > CLIP_LINES:
                lines.append(f"... ({len({r['clip_id'] for r in rows}) - CLIP_LINES} more)")
                break
            video = f"{r['video']}@{r['start_frame']}"[-40:]
            top = ", ".join(f"{t['name']} {t['prob']:.2f}" for t in r["top5"][:3])
            lines.append(f"{video:<40} {top:<36} {r['target_class']}")
    errors = read_table(out.errors)
    dead = [] if errors is None else [e for e in errors.to_pylist()
                                      if info is None or e["run_id"] == info["run_id"]]
    if dead:
        lines.append("")
        lines.append("dead letters:")
        for e in dead:
            lines.append(f"  {e['video']} [{e['stage']}] {e['error_type']}: {e['message']}")
    warned = (info or {}).get("counters", {}).get("method_warnings", 0)
    if warned:
        lines.append("")
        lines.append(f"{warned} map(s) came with a method's warning: not computed as the method "
                     f"promises (e.g. STEP / EP / F-EP masks that missed their areas); each "
                     f"is in the workers' log with its clip")
    return "\n".join(lines)


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
