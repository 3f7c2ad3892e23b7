"""The report's tables as cells: one definition of each table, written as Markdown, CSV and
HTML by the same code."""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.apps.report.failures import COLUMNS
from pipeline.apps.report.tables import Metric


@dataclass(frozen=True)
class Table:
    """A titled table: header cells and rows of formatted cells, plus the raw rows for CSV."""

    title: str
    headers: list[str]
    cells: list[list[str]]
    raw: list[dict]
    note: str = ""


def num(v: float, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def ci(row: dict, col: str, suffix: str = "mean") -> str:
    """``mean [lo, hi]`` of a row's metric (– when absent)."""
    if f"{col}_{suffix}" not in row or math.isnan(row[f"{col}_{suffix}"]):
        return "–"
    return f"{num(row[f'{col}_{suffix}'])} [{num(row[f'{col}_lo'])}, {num(row[f'{col}_hi'])}]"


def pvalue(p: float) -> str:
    return "–" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def paired_cells(row: dict, metrics: Sequence[Metric], win: str) -> list[str]:
    """Per metric: the difference with its interval, the share of clips won, the p-value."""
    cells = []
    for m in metrics:
        cells += [ci(row, m.column, "diff"), num(row.get(f"{m.column}_{win}", math.nan), 2),
                  pvalue(row.get(f"{m.column}_p", math.nan))]
    return cells


def summary_table(rows: Sequence[dict], metrics: Sequence[Metric]) -> Table:
    headers = ["model", "method", "clips"]
    for m in metrics:
        headers += [f"{m.label} {m.arrow} mean [95% CI]", f"{m.label} median"]
    pooled = any("spt_pooled" in r for r in rows)
    if pooled:
        headers.append("S-PT pooled")
    headers += ["s / map", "passes / map (fwd + bwd)", "network accuracy"]
    cells = []
    for r in rows:
        c = [r["model"], r["method"], str(r["clips"])]
        for m in metrics:
            c += [ci(r, m.column), num(r.get(f"{m.column}_median", math.nan))]
        if pooled:
            c.append(num(r.get("spt_pooled", math.nan)))
        c += [num(r["seconds"]), f"{r['forward_passes']:.0f} + {r['backward_passes']:.0f}",
              num(r["accuracy"])]
        cells.append(c)
    return Table("Per method × model", headers, cells, list(rows),
                 "Intervals: 95 % percentile bootstrap of the mean over clips (2000 resamples). "
                 "S-PT: mean of the clips' hit rates; pooled: hits / frames over all clips.")


def pairs_table(rows: Sequence[dict], metrics: Sequence[Metric]) -> Table:
    headers = ["model", "a", "b"]
    for m in metrics:
        headers += [f"Δ {m.label} (a − b) [95% CI]", f"{m.label}: a better (ties ½)", "p"]
    cells = [[r["model"], r["a"], r["b"], *paired_cells(r, metrics, "win")] for r in rows]
    return Table("Methods compared on the same clips", headers, cells, list(rows),
                 "Paired on clip_id: mean difference with a 95 % bootstrap interval, the share "
                 "of clips where a is better (ties half), and the two-sided Wilcoxon "
                 "signed-rank p-value (scipy).")


def chooser_table(rows: Sequence[dict]) -> Table:
    headers = ["model", "metric", "best (mean, s / map)", "cheapest not shown worse",
               "its mean, s / map", "faster by", "tied with the best", "note"]
    cells = []
    for r in rows:
        faster = (f"{r['best_seconds'] / r['choice_seconds']:.1f}×"
                  if r["choice"] and r["choice_seconds"] > 0 else "–")
        note = ("a reference ties with the best: this metric does not separate the methods "
                "on these clips" if r["reference_tied"] else "")
        cells.append([r["model"], r["metric"],
                      f"{r['best']} ({num(r['best_mean'])}, {num(r['best_seconds'])})",
                      r["choice"] or "–",
                      f"{num(r['choice_mean'])}, {num(r['choice_seconds'])}" if r["choice"]
                      else "–", faster, r["tied"], note])
    return Table("Which method", headers, cells, list(rows),
                 "Per metric: the best mean, and the cheapest method (seconds per map; random "
                 "and center excluded) whose per-clip values, paired with the best's on the "
                 "same clips, are not shown different (two-sided Wilcoxon p ≥ 0.05, or too "
                 "few clips to test). On few clips many methods tie: the choice is only as "
                 "good as the run behind it.")


def class_table(rows: Sequence[dict], metrics: Sequence[Metric]) -> Table:
    headers = ["model", "method", "class", "clips", *(f"{m.label} {m.arrow}" for m in metrics)]
    cells = [[r["model"], r["method"], r["class"], str(r["clips"]),
              *(num(r.get(f"{m.column}_mean", math.nan)) for m in metrics)] for r in rows]
    return Table("Per class (true label)", headers, cells, list(rows), "Means over clips.")


def accuracy_table(rows: Sequence[dict]) -> Table:
    headers = ["model", "class", "clips", "correct", "accuracy", "most often predicted instead"]
    cells = [[r["model"], r["class"], str(r["clips"]), str(r["correct"]), num(r["accuracy"]),
              r["most_confused_with"] or "–"] for r in rows]
    return Table("The network's correctness per class", headers, cells, list(rows),
                 "Each clip once (the prediction is the same for every method).")


def delta_table(rows: Sequence[dict], metrics: Sequence[Metric]) -> Table:
    headers = ["method", "clips", "predicted class changed"]
    for m in metrics:
        headers += [f"Δ {m.label} {m.arrow} [95% CI]", "share better (ties ½)", "p"]
    cells = [[r["method"], str(r["clips"]), str(r["prediction_changed"]),
              *paired_cells(r, metrics, "improved")] for r in rows]
    return Table("Candidate − baseline, on the same clips", headers, cells, list(rows),
                 "Matched by (clip_id, method). Intervals: 95 % bootstrap of the mean delta; "
                 "p: Wilcoxon signed-rank.")


def correlation_table(rows: Sequence[dict]) -> Table:
    headers = ["method", "clips compared", "rank correlation of the maps, median [quartiles]",
               "lowest"]
    cells = [[r["method"], str(r["clips"]),
              f"{num(r['rho_median'])} [{num(r['rho_q1'])}, {num(r['rho_q3'])}]",
              num(r["rho_min"])] for r in rows]
    return Table("How much the maps changed", headers, cells, list(rows),
                 "Spearman rank correlation of the two runs' maps of each clip, voxel by voxel "
                 "(1: same ranking; constant maps are left out).")


def failure_table(rows: Sequence[dict]) -> Table:
    """The clips whose latest state is failed (:func:`~pipeline.apps.report.failures.
    latest_failures` rows), with the model when the output holds several."""
    columns = list(COLUMNS)
    if len({r.get("model") for r in rows}) > 1:
        columns.insert(1, ("model", "model"))
    cells = [["–" if r.get(k) is None else str(r[k]) for k, _ in columns] for r in rows]
    return Table("Failed clips", [h for _, h in columns], cells, list(rows),
                 "Each clip in its latest state: a clip written by a later run is not listed; "
                 "a clip that failed several times is listed once, with its latest error.")


def markdown(table: Table) -> str:
    lines = [f"## {table.title}", "", "| " + " | ".join(table.headers) + " |",
             "| " + " | ".join("---" for _ in table.headers) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
              for row in table.cells]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


def write_csv(path: str, table: Table, columns: Sequence[str] = ()) -> str:
    """The table's raw rows as CSV; ``columns`` come first (and make the header of an empty
    table)."""
    keys = list(dict.fromkeys([*columns, *(k for r in table.raw for k in r)]))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, keys)
        writer.writeheader()
        writer.writerows(table.raw)
    return path


def html_table(table: Table, limit: int | None = None) -> str:
    rows = table.cells if limit is None else table.cells[:limit]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    more = (f"<p class='note'>First {limit} of {len(table.cells)} rows; all are in the CSV.</p>"
            if limit is not None and len(table.cells) > limit else "")
    note = f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""
    return (f"<h2>{html.escape(table.title)}</h2><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{note}{more}")
