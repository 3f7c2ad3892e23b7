"""After a run: read the Parquet outputs back, write ``run.json``, print a summary table."""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Iterator
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.storage import arrow_filesystem
from transforms.sink import OutputPaths


def table_files(directory: str) -> list[str]:
    """Committed ``*.parquet`` files under ``directory`` (any depth), sorted, as paths in the
    form ``directory`` was given (local path or URI); files being written (``.inprogress-*``)
    and other hidden files (``.``/``_`` names, at any level) are not committed."""
    fs, base = arrow_filesystem(directory)
    try:  # a missing directory, prefix or bucket lists as empty; anything else is an error
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise ValueError(f"{directory} cannot be listed: {_one_line(exc)}") from None
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


def open_dataset(directory: str, **kwargs) -> ds.Dataset:
    """The committed files of a table directory as one Hive-partitioned pyarrow dataset
    (the report's streaming, column-projected reads); ``kwargs`` go to ``ds.dataset``."""
    fs, base = arrow_filesystem(directory)
    return ds.dataset(base, filesystem=fs, format="parquet", partitioning="hive", **kwargs)


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
        raise ValueError(f"{directory} cannot be read: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def read_table(directory: str, columns: list[str] | None = None,
               where: dict[str, str] | None = None) -> pa.Table | None:
    """Every committed file under ``directory`` as one table (None when there are none)."""
    tables = [t for _, t in iter_tables(directory, columns, where)]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def count_rows(directory: str) -> int:
    table = read_table(directory, columns=["clip_id"])
    return 0 if table is None else table.num_rows


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
    return "\n".join(lines)


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
