"""Streaming, column-projected reads of a run's Parquet tables, in either output layout.

Flat layout: ``OUT/metrics/*.parquet`` with ``model`` and ``method`` columns in the files.
Hive layout: ``OUT/metrics/model=<m>/method=<meth>/*.parquet`` (values URI-encoded), where
``model`` and ``method`` come from the path. Both open as one :mod:`pyarrow.dataset` with hive
partitioning; partition columns are cast to plain strings. Nothing here holds more than one
record batch of the table at a time; saliency maps are read only for the keys asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from apache_beam.io.filesystems import FileSystems

from pipeline import outputs
from transforms.encoding import decode_map

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


def open_table(root: str, table: str) -> ds.Dataset:
    """The ``table`` (``metrics``, ``saliency``, ``errors``) of the output ``root`` as a dataset.

    Raises:
        NoOutput: one line saying what is missing.
    """
    path = FileSystems.join(root, table)
    if not outputs.exists(root):
        raise NoOutput(f"{root} does not exist (give a run's --output directory)")
    if not outputs.exists(path):
        raise NoOutput(f"{root} has no {table}/ table (is it a vidxai run's --output?)")
    dataset = outputs.open_dataset(path, exclude_invalid_files=True)
    if not dataset.files:
        raise NoOutput(f"{path} holds no Parquet files (the run wrote no rows)")
    return dataset


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


def scan(dataset: ds.Dataset, columns: Sequence[str], where: ds.Expression | None = None,
         batch_size: int = 4096) -> Iterator[pa.Table]:
    """The ``columns`` of the rows matching ``where``, one small table per record batch.

    Columns the dataset does not have (an older run's schema) are filled with nulls.
    """
    have = [c for c in columns if c in dataset.schema.names]
    missing = [c for c in columns if c not in have]
    for batch in dataset.to_batches(columns=have, filter=where, batch_size=batch_size):
        if batch.num_rows == 0:
            continue
        table = plain(batch)
        for name in missing:
            table = table.append_column(name, pa.nulls(table.num_rows))
        yield table.select(list(columns))


def read_maps(root: str, keys: Sequence[tuple[str, str]],
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
    dataset = open_table(root, "saliency")
    clips = pa.array(sorted({c for c, _ in keys}), pa.string())
    where = combined_filter(selections, ds.field("clip_id").isin(clips))
    cols = ["clip_id", "method", "video", "start_frame", "num_frames", "frame_stride",
            "target_name", "map_min", "map_max", "encoding", "pool", *VARIANT_KEYS, *columns,
            "saliency"]
    wanted, found = set(keys), {}
    for table in scan(dataset, list(dict.fromkeys(cols)), where, batch_size=8):
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
