"""Streaming, column-projected reads of a run's Parquet tables, in either output layout.

Flat layout: ``OUT/metrics/*.parquet`` with ``model`` and ``method`` columns in the files.
Hive layout: ``OUT/metrics/model=<m>/method=<meth>/*.parquet`` (values URI-encoded), where
``model`` and ``method`` come from the path. Both open as one :mod:`pyarrow.dataset` with hive
partitioning; partition columns are cast to plain strings. Tables are read file by file, and
nothing here holds more than one file's matching rows at a time; saliency maps are read only
for the keys asked for.

Every file is checked when its table is opened (its footer read, its columns' types compared
with the sink's schema); a file that fails, then or while read, is left out of the dataset and
named in :attr:`Output.unreadable` (the report prints and shows each one: no row is dropped
silently).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from apache_beam.io.filesystems import FileSystems

from pipeline import outputs
from transforms.encoding import decode_map
from transforms.sink import ERROR_SCHEMA, METRICS_SCHEMA, saliency_schema

# What identifies a run variant: rows of one variant are comparable.
VARIANT_KEYS = ("model", "weights_sha256", "config_hash")


class NoOutput(ValueError):
    """The directory is not a run's output (missing, or without the table asked for)."""


@dataclass(frozen=True)
class Selection:
    """Rows whose ``key`` starts with ``value`` (hash prefixes), e.g. ``weights_sha256=abc12``,
    or (``negate``, written ``KEY!=VALUE``) the other rows.

    ``model`` and ``method`` must match exactly; the hashes by prefix.
    """

    key: str
    value: str
    negate: bool = False

    @classmethod
    def parse(cls, text: str) -> Selection:
        key, sep, value = text.partition("=")
        negate = key.endswith("!")
        key = key.rstrip("!")
        if not sep or not value or key not in (*VARIANT_KEYS, "method"):
            raise ValueError(f"selection {text!r}: use KEY=VALUE or KEY!=VALUE with KEY one of "
                             f"{', '.join((*VARIANT_KEYS, 'method'))}")
        return cls(key, value, negate)

    def expression(self) -> ds.Expression:
        if self.key in ("model", "method"):
            expr = ds.field(self.key) == self.value
        else:
            expr = pc.starts_with(ds.field(self.key), self.value)
        return ~expr if self.negate else expr

    def inverted(self) -> Selection:
        return Selection(self.key, self.value, not self.negate)

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negate else '='}{self.value}"


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
        schema = outputs.read_parquet(path).schema_arrow
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is named, not raised
        return None, " ".join(str(exc).split())[:200] or type(exc).__name__
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
        if not outputs.exists(self.root):
            raise NoOutput(f"{self.root} does not exist (give a run's --output directory)")
        if not outputs.exists(path):
            raise NoOutput(f"{self.root} has no {table}/ table (is it a vidxai run's --output?)")
        files = outputs.table_files(path)
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
        fs, base = outputs.arrow_filesystem(path)
        paths = [outputs.arrow_filesystem(f)[1] for f, _ in good]
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
                self._name([Unreadable(self._uri(fragment.path), "failed while read: "
                                       + " ".join(str(exc).split())[:200])])
                continue
            for batch in batches:
                table = plain(batch)
                for name in missing:
                    table = table.append_column(name, pa.nulls(table.num_rows))
                yield table.select(list(columns))

    def _uri(self, fs_path: str) -> str:
        """A file's path as the user gave the output (``s3://…`` kept)."""
        _, base = outputs.arrow_filesystem(self.root)
        rel = fs_path[len(base):].lstrip("/")
        return FileSystems.join(self.root, rel) if "://" in self.root else os.path.join(
            self.root, rel)


def as_output(root: str | Output) -> Output:
    return root if isinstance(root, Output) else Output(root)


def plain(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """Dictionary columns (hive partition values) cast to their value type."""
    table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


def combined_filter(selections: Sequence[Selection], extra: ds.Expression | None = None
                    ) -> ds.Expression | None:
    """All ``selections`` (and ``extra``) together; None when there is nothing to filter."""
    expr = extra
    for s in selections:
        expr = s.expression() if expr is None else expr & s.expression()
    return expr


def read_maps(root: str | Output, keys: Sequence[tuple[str, str]],
              selections: Sequence[Selection] = (), columns: Sequence[str] = ()
              ) -> dict[tuple[str, str], tuple[dict, object]]:
    """Saliency maps of the (clip_id, method) ``keys`` only.

    Returns:
        {(clip_id, method): (row without the map, float32 (T, H, W) map)}; the first row of a
        key wins when several variants match (narrow them with ``selections``).
    """
    import numpy as np

    if not keys:
        return {}
    output = as_output(root)
    dataset = output.table("saliency")
    clips = pa.array(sorted({c for c, _ in keys}), pa.string())
    where = combined_filter(selections, ds.field("clip_id").isin(clips))
    cols = ["clip_id", "method", "video", "start_frame", "num_frames", "frame_stride",
            "target_name", "map_min", "map_max", "encoding", "pool", "run_id", *VARIANT_KEYS,
            *columns,
            "saliency"]
    wanted, found = set(keys), {}
    for table in output.scan(dataset, list(dict.fromkeys(cols)), where, batch_size=8):
        maps = table.column("saliency").combine_chunks().to_numpy_ndarray()
        for row, sal in zip(table.drop_columns(["saliency"]).to_pylist(), maps, strict=True):
            key = (row["clip_id"], row["method"])
            if key in wanted and key not in found:
                # uint8 / pooled maps (--saliency-dtype, --saliency-pool) back to float32
                # (T, H, W); older runs have neither column (float16, unpooled).
                found[key] = (row, decode_map(np.asarray(sal), row["encoding"] or "float16",
                                              row["map_min"], row["map_max"],
                                              tuple(row["pool"] or (1, 1)), upsample=True))
    return found
