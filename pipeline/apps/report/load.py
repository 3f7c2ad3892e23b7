"""One pass over a run's ``metrics/``: the per-row scalars and the running mean curves.

The scalars (a few numbers per row, no curves and no maps) are kept as one Arrow table; the
deletion / insertion curves are reduced batch by batch to a running mean per group, so memory
grows by ~100 bytes per metrics row and never with the maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.apps.report.failures import latest_failures, latest_written
from pipeline.apps.report.read import VARIANT_KEYS, Selection, as_output, combined_filter
from pipeline.apps.report.stats import CurveMean
from pipeline.outputs import NoOutput, Output

SCALARS = ("clip_id", "video", "start_frame", "run_id", "method", *VARIANT_KEYS, "label",
           "label_name", "predicted", "predicted_name", "correct", "deletion_auc",
           "insertion_auc", "spt_rate", "spt_hits", "spt_frames", "tpt_hit",
           "t_above_median_share", "seconds",
           "forward_passes", "backward_passes")
CURVES = ("deletion_curve", "insertion_curve")
ERROR_COLUMNS = ("clip_id", "video", "start_frame", "stage", "error_type", "message", "model",
                 "weights_sha256", "run_id")

Group = tuple[str, str, str, str]  # (model, weights_sha256, config_hash, method)


@dataclass
class RunData:
    """What the report needs from one output directory (or one selection of it).

    Attributes:
        root: the output directory.
        scalars: one row per metrics row, the :data:`SCALARS` columns.
        curves: per group and curve name, the running mean of the curves.
        failures: the latest error row of each clip whose latest state is failed
            (:mod:`~pipeline.apps.report.failures`).
        error_rows: the dead-letter rows in errors/ (of the selection's model and weights).
        output: the opened output (its :attr:`~Output.unreadable` files).
    """

    root: str
    scalars: pa.Table
    curves: dict[Group, dict[str, CurveMean]] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    error_rows: int = 0
    output: Output | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def groups(self) -> dict[Group, np.ndarray]:
        """Row indices of each (model, weights, config, method) group, in sorted order."""
        return group_rows(self.scalars, (*VARIANT_KEYS, "method"))

    def column(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A scalar column as float64 (NaN for null; bools as 0 / 1), optionally some rows."""
        if name not in self._cache:
            col = pc.cast(self.scalars.column(name), pa.float64())
            self._cache[name] = np.asarray(col.to_numpy(zero_copy_only=False), np.float64)
        values = self._cache[name]
        return values if rows is None else values[rows]

    def strings(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A string column as an object array (None for null), optionally some rows."""
        key = f"str:{name}"
        if key not in self._cache:
            self._cache[key] = np.asarray(self.scalars.column(name).to_pylist(), dtype=object)
        values = self._cache[key]
        return values if rows is None else values[rows]


def group_rows(table: pa.Table, keys: tuple[str, ...]) -> dict[tuple, np.ndarray]:
    """Row indices (ascending) per distinct combination of the string columns ``keys`` (nulls
    as ``""``), keys sorted; by Arrow's hash ``group_by`` (single-threaded: rows keep their
    order)."""
    if table.num_rows == 0:
        return {}
    indexed = pa.table({**{k: pc.fill_null(table.column(k), "") for k in keys},
                        "_row": np.arange(table.num_rows)})
    groups = indexed.group_by(list(keys), use_threads=False).aggregate([("_row", "list")])
    lists = groups.column("_row_list").combine_chunks()
    rows, offsets = lists.values.to_numpy(), lists.offsets.to_numpy()
    out = {tuple(g.values()): rows[offsets[i]:offsets[i + 1]]
           for i, g in enumerate(groups.select(list(keys)).to_pylist())}
    return dict(sorted(out.items()))


def load_run(root: str | Output, selections: tuple[Selection, ...] = (),
             batch_size: int = 4096) -> RunData:
    """Read ``root``'s metrics (scalars + mean curves) in one streaming pass, and its failed
    clips; every file of metrics/, errors/ and saliency/ is checked (damaged ones named in
    ``RunData.output.unreadable``).

    Raises:
        NoOutput: the directory, its metrics/ table or any matching row is missing.
    """
    output = as_output(root)
    root = output.root
    dataset = output.table("metrics")
    where = combined_filter(selections)
    parts: list[pa.Table] = []
    curves: dict[Group, dict[str, CurveMean]] = {}
    for table in output.scan(dataset, [*SCALARS, *CURVES], where, batch_size):
        parts.append(table.select(list(SCALARS)))
        for key, rows in group_rows(table, (*VARIANT_KEYS, "method")).items():
            sub = table.take(pa.array(rows))
            for name in CURVES:
                values = sub.column(name).to_pylist()
                full = [v for v in values if v]
                if full and len({len(v) for v in full}) == 1:
                    curves.setdefault(key, {n: CurveMean() for n in CURVES})[name].add(
                        np.asarray(full, np.float64))
    if not parts:
        what = " matching " + ", ".join(map(str, selections)) if selections else ""
        raise NoOutput(f"{root}/metrics has no rows{what}")
    scalars = pa.concat_tables(parts).combine_chunks()
    errors = read_errors(output, selections)
    written = latest_written(scalars.select(["clip_id", "model", "weights_sha256", "run_id"])
                             .to_pylist())
    try:  # checked now so that a damaged map file is named even when no map is read
        output.table("saliency")
    except NoOutput:
        pass
    return RunData(root, scalars, curves, latest_failures(errors, written), len(errors),
                   output)


def read_errors(output: Output, selections: tuple[Selection, ...] = ()) -> list[dict]:
    """The errors/ rows (no saliency, a few strings each) of the selection's model and weights
    (selections on method or config_hash do not apply: a dead letter has neither)."""
    try:
        dataset = output.table("errors")
    except NoOutput:
        return []
    where = combined_filter([s for s in selections if s.key in ("model", "weights_sha256")])
    return [r for t in output.scan(dataset, list(ERROR_COLUMNS), where) for r in t.to_pylist()]
