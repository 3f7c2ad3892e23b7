"""The report's concepts section (``OUT/concepts/``, written by ``run_pipeline.py concepts``).

Per class and layer, the concepts sorted by their dynamic score, each with its interval over
the R runs, its significance and direction, its static twin beside it, CAV accuracy and the
Bonferroni m; then frame strips of example clips (for discovered concepts: the tube's region,
the rest filled with the dataset mean, as the network saw it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.apps.report.page import Figure, Section
from pipeline.apps.report.render import Table, num, pvalue, write_csv
from pipeline.apps.visualize import save_png
from pipeline.outputs import read_table

CSV = "concepts.csv"
STRIP_FRAMES = 5


def concept_rows(output: str) -> list[dict]:
    """Every row of ``OUT/concepts/`` (empty when the directory has none)."""
    table = read_table(FileSystems.join(output, "concepts"))
    return [] if table is None else table.to_pylist()


def interval(row: dict) -> str:
    """``mean [lo, hi]``: normal 95 % interval of the mean of the R run scores."""
    r = max(1, len(row["scores"]))
    half = 1.96 * row["score_std"] / math.sqrt(r)
    return f"{num(row['score_mean'], 2)} [{num(row['score_mean'] - half, 2)}, " \
           f"{num(row['score_mean'] + half, 2)}]"


def verdict(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["direction"] == "excluded":
        return f"excluded (CAV acc {num(row['cav_accuracy_mean'], 2)})"
    text = (f"significant {row['direction']}" if row["significant"] else "not significant")
    return text + (" (degenerate layer)" if row["degenerate_layer"] else "")


def concepts_table(rows: Sequence[dict]) -> Table:
    """Per class × layer, dynamic and static side by side, sorted by the dynamic score."""
    pairs: dict[tuple, dict] = {}
    for r in rows:
        pairs.setdefault((r["class_name"], r["layer"], r["concept"], r["model"]), {})[
            r["kind"]] = r
    headers = ["class", "layer", "concept", "source", "dynamic score [95% CI]", "dynamic",
               "p", "static score [95% CI]", "static", "null", "CAV acc dyn / static",
               "m", "model"]
    ordered = sorted(pairs.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1].get(
        "dynamic", {"score_mean": -1})["score_mean"]))
    cells, raw = [], []
    for (cls, layer, concept, model), kinds in ordered:
        d, s = kinds.get("dynamic"), kinds.get("static")
        first = d or s
        cells.append([cls, layer, concept, first["source"], interval(d) if d else "–",
                      verdict(d), pvalue(d["p"]) if d else "–", interval(s) if s else "–",
                      verdict(s), num(first["null_mean"], 2),
                      f"{num(d['cav_accuracy_mean'], 2) if d else '–'} / "
                      f"{num(s['cav_accuracy_mean'], 2) if s else '–'}",
                      str(first["bonferroni_m"]), model])
        raw.append({"class": cls, "layer": layer, "concept": concept, "model": model,
                    **{f"{k}_{c}": v[c] for k, v in kinds.items()
                       for c in ("score_mean", "score_std", "null_mean", "p", "significant",
                                 "direction", "cav_accuracy_mean", "bonferroni_m")}})
    return Table("Concepts per class (Video-TCAV)", headers, cells, raw,
                 "score: share of the class's clips whose class logit grows along the "
                 "concept's CAV; interval over the R runs; m: Bonferroni count of the run")


def example_frames(example: str, model: str) -> np.ndarray | None:
    """uint8 (T, H, W, 3) of one example: ``VIDEO``, ``VIDEO@START`` (a clip from frame
    START) or ``VIDEO@START#tubeN`` (only the tube's region)."""
    from models.registry import get_spec
    from transforms.records import ClipRef
    from transforms.tcav_stages import ConceptClip, FeatureSettings, decode_frames, proposal_frames

    try:
        spec = get_spec(model)
        t, size, ratio, mean = spec.num_frames, spec.input_size, spec.resize_ratio, spec.mean
    except ValueError:
        t, size, ratio, mean = 16, 112, 1.0, (0.45, 0.45, 0.45)
    video, start, tube = example, 0, -1
    if "#tube" in video:
        video, tube_s = video.rsplit("#tube", 1)
        tube = int(tube_s)
    if "@" in video and video.rsplit("@", 1)[1].isdigit():
        video, start_s = video.rsplit("@", 1)
        start = int(start_s)
    s = FeatureSettings(model, (), "space", t, size, ratio, 1, "", mean,
                        tube_stride=max(1, size // 14), box_size=2 * max(1, size // 14))
    try:
        frames = decode_frames(ConceptClip(ClipRef("", video, start)), s)
        if tube >= 0:
            frames = dict(proposal_frames(frames, s)).get(tube)
        return frames
    except Exception:  # noqa: BLE001 - a moved or unreadable example is just not pictured
        return None


def strip(examples: Sequence[str], model: str, count: int = 3) -> np.ndarray | None:
    """Rows of ``STRIP_FRAMES`` frames of up to ``count`` examples, stacked."""
    rows = []
    for ex in examples[:count]:
        frames = example_frames(ex, model)
        if frames is None:
            continue
        idx = np.linspace(0, len(frames) - 1, STRIP_FRAMES).round().astype(int)
        rows.append(np.concatenate([np.pad(frames[i], ((2, 2), (2, 2), (0, 0)),
                                           constant_values=255) for i in idx], axis=1))
    return np.concatenate(rows, axis=0) if rows else None


def section(output: str, report: str, max_strips: int = 12) -> Section | None:
    """The concepts section (None when ``OUT/concepts/`` has no rows); writes the CSV and the
    strips under ``report``."""
    rows = concept_rows(output)
    if not rows:
        return None
    table = concepts_table(rows)
    write_csv(os.path.join(report, CSV), table)
    figures = []
    seen: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        seen.setdefault((r["concept"], r["model"]), list(r["examples"]))
    os.makedirs(os.path.join(report, "figures"), exist_ok=True)
    for (concept, model), examples in sorted(seen.items())[:max_strips]:
        image = strip(examples, model)
        if image is None:
            continue
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in concept)
        save_png(os.path.join(report, "figures", f"concept_{name}.png"), image)
        what = ("tube regions of input clips" if "#tube" in examples[0] else "example clips")
        figures.append(Figure(f"figures/concept_{name}.png",
                              f"{concept}: {what}, frames {STRIP_FRAMES} evenly spaced"))
    m = sorted({r["bonferroni_m"] for r in rows})
    return Section("Concepts (Video-TCAV)", [
        f"{len(rows)} rows from {FileSystems.join(output, 'concepts')}; Bonferroni m per run: "
        f"{', '.join(map(str, m))}. A significant score below the null is a negative relation. "
        "Rows whose CAVs were no better than the accuracy threshold are excluded from the "
        "test. See docs/CONCEPTS.md."], [table], figures, table_limit=200)


def only_report(output: str, report: str) -> str | None:
    """A report of the concepts section alone, for an output the explanation job never wrote
    to; returns the index path, or None when there are no concept rows either."""
    from pipeline.apps.report.page import page

    if not concept_rows(output):
        return None
    os.makedirs(report, exist_ok=True)
    sec = section(output, report)
    index = os.path.join(report, "index.html")
    with open(index, "w") as fh:
        fh.write(page(f"vidxai concepts report: {output}", [sec]))
    return index
