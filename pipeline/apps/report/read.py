"""The report's reads of a run's Parquet tables: selections of variants and saliency maps.

Every read goes through :class:`pipeline.outputs.Output` (both output layouts, each file checked
once, damaged files named and left out, streaming column-projected scans); this module adds what
only the report needs: :class:`Selection` (``KEY=VALUE`` filters on the variant columns) and
:func:`read_maps` (the maps of given clips only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipeline.outputs import Output
from transforms.encoding import decode_map

# What identifies a run variant: rows of one variant are comparable.
VARIANT_KEYS = ("model", "weights_sha256", "config_hash")
SELECTION_KEYS = (*VARIANT_KEYS, "method", "video")  # --where / --baseline


@dataclass(frozen=True)
class Selection:
    """Rows whose ``key`` starts with ``value`` (hash prefixes), e.g. ``weights_sha256=abc12``,
    or (``negate``, written ``KEY!=VALUE``) the other rows.

    ``model`` and ``method`` must match exactly; the hashes and ``video`` (the path as the run
    wrote it, e.g. a directory of the manifest) by prefix.
    """

    key: str
    value: str
    negate: bool = False

    @classmethod
    def parse(cls, text: str) -> Selection:
        key, sep, value = text.partition("=")
        negate = key.endswith("!")
        key = key.rstrip("!")
        if not sep or not value or key not in SELECTION_KEYS:
            raise ValueError(f"selection {text!r}: use KEY=VALUE or KEY!=VALUE with KEY one of "
                             f"{', '.join(SELECTION_KEYS)}")
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


def as_output(root: str | Output) -> Output:
    return root if isinstance(root, Output) else Output(root)


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
