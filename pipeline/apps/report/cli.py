"""``run_pipeline.py report``: tables, plots and pictures of a finished run, in ``OUT/report/``.

    python run_pipeline.py report --output OUT [--compare OTHER] [--clips ID,...] [...]

See :func:`parse_args` for every option and docs/USER_GUIDE.md's "Report" section for the files.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import storage
from pipeline.apps.report import compare, concepts, pictures, plots, render, tables
from pipeline.apps.report.colours import method_rgb
from pipeline.apps.report.load import ERROR_COLUMNS, RunData, load_run
from pipeline.apps.report.page import Figure, Section, page
from pipeline.apps.report.read import Selection, read_maps
from pipeline.apps.report.truth import GroundTruth, crop_boxes
from pipeline.apps.visualize import SCALES
from pipeline.outputs import NoOutput
from pipeline.strict_args import check_known_args
from transforms.remote import is_remote


@dataclass(frozen=True)
class Options:
    """The report's settings (see :func:`parse_args`)."""

    output: str
    report: str
    where: tuple[Selection, ...] = ()
    compare: str | None = None
    baseline: tuple[Selection, ...] = ()
    clips: tuple[str, ...] = ()
    pick: int = 1
    pick_metric: str = "insertion_auc"
    pick_method: str = "aosa"
    reference: str | None = "aosa"
    scale: str = "minmax"
    map_clips: int = 50
    changed: int = 3
    animate: bool = True


def parse_args(argv: Sequence[str]) -> Options:
    ap = argparse.ArgumentParser(
        prog="run_pipeline.py report",
        description="Tables, plots and pictures of a finished run (and two runs compared), "
                    "written to OUT/report/: index.html, summary.md, CSV files, figures/, "
                    "clips/.")
    ap.add_argument("--output", required=True, help="the run's --output directory")
    ap.add_argument("--report", default=None, help="where to write (default OUTPUT/report)")
    ap.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                    help="only rows with KEY=VALUE (or KEY!=VALUE); KEY is model, method, "
                         "weights_sha256, config_hash or video (hashes and video by prefix); "
                         "repeatable")
    ap.add_argument("--compare", default=None, metavar="OTHER",
                    help="a baseline output directory (may be OUTPUT itself with --baseline): "
                         "its clips are matched to OUTPUT's by clip_id and method")
    ap.add_argument("--baseline", action="append", default=[], metavar="KEY=VALUE",
                    help="narrow --compare's rows (e.g. weights_sha256=abc12); when --compare "
                         "is OUTPUT itself and --where is not given, the candidate is every "
                         "other row")
    ap.add_argument("--clips", default="",
                    help="comma list of clips to picture: clip ids, id prefixes or video file "
                         "names (default: the --pick best and worst clips)")
    ap.add_argument("--pick", type=int, default=1,
                    help="without --clips: picture this many best and this many worst clips")
    ap.add_argument("--pick-metric", default="insertion_auc",
                    choices=[m.column for m in tables.METRICS],
                    help="the metric that ranks clips for --pick")
    ap.add_argument("--pick-method", default="aosa",
                    help="the method whose metric ranks clips (default aosa, else the first)")
    ap.add_argument("--reference", default="aosa",
                    help="methods are compared in pairs with this one ('all': every pair)")
    ap.add_argument("--scale", default="minmax", choices=sorted(SCALES),
                    help="colour scale of the pictures (stated on each)")
    ap.add_argument("--map-clips", type=int, default=50,
                    help="with --compare: clips per method whose maps are correlated")
    ap.add_argument("--changed", type=int, default=3,
                    help="with --compare: picture this many clips whose maps changed most")
    ap.add_argument("--no-animation", action="store_true", help="skip the animated GIFs")
    ap.add_argument_group(
        "storage", "Outputs on object storage take Beam's own storage flags, e.g. "
        "--s3_endpoint_url, --s3_access_key_id, --s3_secret_access_key, --s3_region_name "
        "(GCS: the machine's application-default credentials).")
    a, rest = ap.parse_known_args(argv)
    check_known_args(rest)  # only Beam's flags may remain (e.g. --s3_endpoint_url)
    storage.configure(PipelineOptions(rest))
    where = tuple(Selection.parse(s) for s in a.where)
    baseline = tuple(Selection.parse(s) for s in a.baseline)
    if a.compare and same_dir(a.compare, a.output) and not where:
        if len(baseline) != 1:
            raise ValueError("--compare OUTPUT (one output, two variants) needs one --baseline "
                             "KEY=VALUE, or --where for the candidate as well")
        where = (baseline[0].inverted(),)
    return Options(a.output, a.report or FileSystems.join(a.output, "report"), where, a.compare,
                   baseline, tuple(c for c in a.clips.split(",") if c), max(a.pick, 0),
                   a.pick_metric, a.pick_method, None if a.reference == "all" else a.reference,
                   a.scale, max(a.map_clips, 0), max(a.changed, 0), not a.no_animation)


def same_dir(a: str, b: str) -> bool:
    if is_remote(a) or is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def clip_pictures(run: RunData, opts: Options, clip_ids: Sequence[str],
                  truth: GroundTruth) -> list[Figure]:
    """The Fig. 5 grid and the animation of each clip, every method of the selection, with the
    manifest's ground-truth boxes when it has them."""
    figures = []
    methods = run.strings("method")
    ids = run.strings("clip_id")
    for cid in clip_ids:
        idx = [i for i in range(len(ids)) if ids[i] == cid]
        keys = [(cid, m) for m in sorted({methods[i] for i in idx})]
        maps = read_maps(run.output or opts.output, keys, opts.where)
        if not maps:
            continue
        values = {methods[i]: (run.column("insertion_auc", [i])[0],
                               run.column("deletion_auc", [i])[0]) for i in idx}
        first_row, first_map = next(iter(maps.values()))
        frames, boxes, note = strip(first_row, first_map.shape, truth)
        rows = [(f"{m}\nins {render.num(values[m][0], 2)} del {render.num(values[m][1], 2)}",
                 sal) for (_, m), (_, sal) in maps.items()]
        colours = [method_rgb(m) for _, m in maps]
        name = os.path.basename(first_row["video"] or cid)
        title = f"{name} [{cid}]: '{first_row['target_name']}'" + (f"; {note}" if note
                                                                   else "")
        stem = safe(f"{os.path.splitext(name)[0]}_{cid}")  # ids like v.mp4#s0 stay apart
        figures.append(Figure(f"clips/{stem}.png", title))
        pictures.grid_png(os.path.join(opts.report, "clips", f"{stem}.png"), frames, rows,
                          title, opts.scale, colours, boxes)
        if opts.animate:
            gif = os.path.join(opts.report, "clips", f"{stem}.gif")
            pictures.write_gif(gif, pictures.animation_frames(frames, rows, opts.scale,
                                                              colours=colours, boxes=boxes))
            figures.append(Figure(f"clips/{stem}.gif", f"{title}: every frame, animated"))
    return figures


def strip(row: dict, shape: tuple[int, int, int], truth: GroundTruth
          ) -> tuple[np.ndarray, list | None, str]:
    """A pictured clip's frames (T, H, W, 3), its boxes in crop pixels (or None) and a note."""
    frames, note, clip = pictures.clip_frames(row, shape)
    if clip is None:
        return frames, None, note
    video_boxes, note = truth.video_boxes(row["video"], row.get("run_id"))
    if video_boxes is None:
        return frames, None, note
    boxes, note = crop_boxes(video_boxes, clip, shape[1])
    return frames, boxes, note


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def changed_pictures(opts: Options, run: RunData, baseline: RunData, keys: Sequence[compare.Key],
                     corr: dict[compare.Key, float]) -> list[Figure]:
    """Side by side (baseline row above candidate row) for the clips whose maps changed most."""
    figures = []
    truth = GroundTruth(opts.output, [])
    for cid, method in keys:
        a = read_maps(run.output or opts.output, [(cid, method)], opts.where)
        b = read_maps(baseline.output or opts.compare, [(cid, method)], opts.baseline)
        if not a or not b:
            continue
        row, cand = a[(cid, method)]
        base_row, base = b[(cid, method)]
        truth.videos.add(row["video"])
        frames, boxes, note = strip(row, cand.shape, truth)
        rows = [(f"baseline\n{method}\nc:{tables.short(base_row['config_hash'])} "
                 f"w:{tables.short(base_row['weights_sha256'])}", base),
                (f"candidate\n{method}\nc:{tables.short(row['config_hash'])} "
                 f"w:{tables.short(row['weights_sha256'])}", cand)]
        name = os.path.basename(row["video"] or cid)
        title = (f"{name} [{cid}] {method}: rank correlation {corr[(cid, method)]:.2f}"
                 + (f"; {note}" if note else ""))
        stem = safe(f"changed_{os.path.splitext(name)[0]}_{cid}_{method}")
        pictures.grid_png(os.path.join(opts.report, "clips", f"{stem}.png"), frames, rows,
                          title, opts.scale, [method_rgb(method)] * 2, boxes)
        figures.append(Figure(f"clips/{stem}.png", title))
    return figures


def describe(run: RunData, selections: Sequence[Selection]) -> str:
    sel = f" (rows with {', '.join(map(str, selections))})" if selections else ""
    clips = len(set(run.strings("clip_id")))
    types = collections.Counter(e["error_type"] for e in run.failures)
    errors = ", ".join(f"{k} {v}" for k, v in types.most_common())
    n = len(run.failures)
    failed = f"{n} failed clip{'' if n == 1 else 's'}" + (f" ({errors})" if errors else "")
    return (f"{run.root}{sel}: {run.scalars.num_rows} metrics rows, {clips} clips written; "
            f"{failed} in their latest state (dead-letter rows in errors/: {run.error_rows}, "
            f"those of clips written by a later run included).")


def unreadable_lines(*runs: RunData | None) -> list[str]:
    """One line per file of the outputs that could not be read (once, when both runs are one
    output)."""
    return list(dict.fromkeys(str(u) for r in runs if r is not None and r.output is not None
                              for u in r.output.unreadable))


def build_report(opts: Options) -> list[str]:
    """Write the whole report; returns the paths written (index.html first).

    A report on object storage (``s3://…/report``) is drawn in a local temporary directory and
    then copied there, replacing the previous report's files.
    """
    if not is_remote(opts.report):
        return _build_report(opts)
    with tempfile.TemporaryDirectory(prefix="vidxai-report-") as tmp:
        paths = _build_report(dataclasses.replace(opts, report=tmp))
        storage.publish_dir(tmp, opts.report)
    return [FileSystems.join(opts.report, os.path.relpath(p, tmp)) for p in paths]


def _build_report(opts: Options) -> list[str]:
    t0 = time.time()
    run = load_run(opts.output, opts.where)
    base = load_run(opts.compare, opts.baseline) if opts.compare else None
    for d in ("figures", "clips"):  # a previous report's pictures would linger beside
        os.makedirs(os.path.join(opts.report, d), exist_ok=True)
        for old in glob.glob(os.path.join(opts.report, d, "*.png")) + glob.glob(
                os.path.join(opts.report, d, "*.gif")):
            os.remove(old)
    metrics = tables.present_metrics(run)
    summary = tables.summarise(run)
    tabs = [render.summary_table(summary, metrics),
            render.pairs_table(tables.method_pairs(run, opts.reference), metrics)]
    if metrics:
        tabs.append(render.chooser_table(tables.chooser(run)))
    extra = [render.accuracy_table(tables.accuracy_per_class(run)),
             render.class_table(tables.per_class(run), metrics)]
    extra = [t for t in extra if t.raw]
    failed = render.failure_table(run.failures)
    picked = pictures.pick_clips(run, opts.pick_metric, opts.pick_method, opts.pick, opts.clips)
    how = ("chosen with --clips" if opts.clips else
           f"the {opts.pick} best and worst by {opts.pick_metric} of {opts.pick_method}")
    videos = set(run.strings("video")[np.isin(run.strings("clip_id"), picked)])
    sections = [
        Section("vidxai report", [describe(run, opts.where),
                                  f"Made {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."],
                tabs),
        plot_section(run, summary, metrics, os.path.join(opts.report, "figures")),
        Section("Clips", [f"Clips {how}. Frames on top, then one row per method; each map is "
                          f"normalised on its own ({SCALES[opts.scale]}), a constant map is "
                          f"drawn grey as 'no signal'; the cross marks each frame's maximum; "
                          f"green boxes: the manifest's ground truth, where it has boxes."],
                figures=clip_pictures(run, opts, picked, GroundTruth(opts.output, videos))),
        Section("Failures", [f"{len(run.failures)} clips failed in their latest state; "
                                 f"all are in failures.csv." if run.failures
                                 else "No clip failed (in its latest state)."],
                [failed] if run.failures else [], table_limit=100),
    ]
    if extra:
        sections.append(Section("Per class", tables=extra, table_limit=60))
    compared: list = []
    if base is not None:
        section = comparison(run, base, opts)
        sections.append(section)
        compared = list(section.tables)
    concept_section = concepts.section(opts.output, opts.report)  # OUT/concepts/, if any
    if concept_section is not None:
        sections.append(concept_section)
    lines = unreadable_lines(run, base)
    for line in lines:
        print(f"vidxai report: warning: {line}", file=sys.stderr)
    if lines:  # first, where nobody misses it
        sections.insert(0, Section("Files that could not be read", lines))
    paths = write_files(opts, sections, [*tabs, *extra, failed, *compared], lines)
    print(f"report: {paths[0]} ({time.time() - t0:.1f} s)", file=sys.stderr)
    return paths


def plot_section(run: RunData, summary: list[dict], metrics: list, fig: str) -> Section:
    """The plots that have something to show; none (and a line saying why) without metrics."""
    figures = []
    if metrics:
        plots.distributions(run, metrics, os.path.join(fig, "distributions.png"))
        figures.append(Figure("figures/distributions.png", "Per-clip values of each metric "
                              "(box: quartiles; whiskers: 1.5 IQR; triangle: mean)."))
    if plots.has_curves(run):
        plots.mean_curves(run, os.path.join(fig, "curves.png"))
        figures.append(Figure("figures/curves.png", "Mean deletion and insertion curves; band: "
                              "pointwise 95 % interval of the mean (normal approximation)."))
    if plots.has_quality(summary):
        plots.time_quality(summary, os.path.join(fig, "time_quality.png"))
        figures.append(Figure("figures/time_quality.png", "Seconds per map against quality "
                              "(95 % bootstrap intervals)."))
    if figures:
        return Section("Plots", ["Each method has one colour in every figure."], figures=figures)
    return Section("Plots", ["No plots: these rows hold no metric values (a run with "
                             "--no-metrics); their costs are in the first table."])


def comparison(run: RunData, base: RunData, opts: Options) -> Section:
    """The comparison section (its tables go to summary.md and CSV too)."""
    delta_rows = compare.metric_deltas(run, base)
    metrics = [m for m in tables.METRICS if any(f"{m.column}_diff" in r for r in delta_rows)]
    keys = compare.matched_keys(run, base, opts.map_clips)
    corr = compare.map_correlations(run.output or opts.output, base.output or opts.compare,
                                    keys, opts.where, opts.baseline)
    new = [render.delta_table(delta_rows, metrics),
           render.correlation_table(compare.correlation_rows(corr))]
    figs = []
    if delta_rows and metrics:
        plots.deltas(delta_rows, metrics, os.path.join(opts.report, "figures", "deltas.png"))
        figs.append(Figure("figures/deltas.png", "Candidate − baseline per method, 95 % "
                                                 "bootstrap intervals."))
    figs += changed_pictures(opts, run, base, compare.changed_most(corr, opts.changed), corr)
    return Section("Compared with a baseline",
                   [f"Candidate: {describe(run, opts.where)}",
                    f"Baseline: {describe(base, opts.baseline)}",
                    f"Maps correlated on at most {opts.map_clips} matched clips per method; "
                    f"pictured: the {opts.changed} whose maps agree least."],
                   new, figs)


CSV_NAMES = {"Per method × model": "summary.csv", "Methods compared on the same clips":
             "pairs.csv", "Which method": "choose.csv", "Per class (true label)": "classes.csv",
             "The network's correctness per class": "accuracy.csv",
             "Candidate − baseline, on the same clips": "compare.csv",
             "How much the maps changed": "map_correlation.csv", "Failed clips": "failures.csv"}
ALWAYS = {"Failed clips": ERROR_COLUMNS}  # written even when empty (a header line), so that
# a scheduled job's reader finds the file in every report


def write_files(opts: Options, sections: Sequence[Section], all_tables: Sequence,
                unreadable: Sequence[str] = ()) -> list[str]:
    index = os.path.join(opts.report, "index.html")
    with open(index, "w") as fh:
        fh.write(page(f"vidxai report: {opts.output}", sections))
    md = os.path.join(opts.report, "summary.md")
    first = next(s for s in sections if s.title == "vidxai report")
    damaged = "".join(f"- {line}\n" for line in unreadable)
    with open(md, "w") as fh:
        fh.write(f"# vidxai report\n\n{first.paragraphs[0]}\n\n")
        if damaged:
            fh.write(f"## Files that could not be read\n\n{damaged}\n")
        fh.write("\n".join(render.markdown(t) for t in all_tables
                            if t.raw or t.title not in ALWAYS))
    csvs = [render.write_csv(os.path.join(opts.report, CSV_NAMES[t.title]), t,
                             ALWAYS.get(t.title, ()))
            for t in all_tables if t.raw or t.title in ALWAYS]
    return [index, md, *csvs]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        build_report(opts)
    except NoOutput as exc:  # a concepts job's output alone still gets its section
        if concepts.only_report(opts.output, opts.report) is None:
            print(f"vidxai report: error: {exc}", file=sys.stderr)
            return 2
    except ValueError as exc:  # UnknownOptionError included
        print(f"vidxai report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
