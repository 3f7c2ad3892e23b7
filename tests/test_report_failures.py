"""The report under failure (issue 18): damaged files named and never silently dropped, failed
clips in their latest state, runs without metrics, one colour per method, each section once,
ground-truth boxes on the strips."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import run_pipeline
from pipeline.apps.report import cli, colours
from pipeline.apps.report.failures import latest_failures, latest_written
from pipeline.apps.report.load import load_run
from tests.report_outputs import metric_row, saliency_row, write_output
from tests.test_report import CLIPS, MODEL, ramp, run_rows

TABLES = ("metrics", "saliency", "errors")


def error_row(clip_id: str, run_id: str, error_type: str = "DecodeError",
              model: str = "tiny", **values) -> dict:
    row = {"clip_id": clip_id, "video": f"/nowhere/{clip_id}.avi", "start_frame": 0,
           "stage": "decode", "error_type": error_type, "message": f"{clip_id} in {run_id}",
           "model": model, "weights_sha256": "w" * 64, "run_id": run_id}
    row.update(values)
    return row


def parquet_files(root: Path, table: str, part: str) -> list[Path]:
    return sorted((root / table).rglob(f"{part}.parquet"))


def damage(root: Path) -> list[Path]:
    """In each table: every part-1 file truncated to half its bytes, plus one garbage file
    and one file whose data pages are overwritten after an intact footer (metrics only)."""
    damaged = []
    for table in TABLES:
        for f in parquet_files(root, table, "part-1"):
            data = f.read_bytes()
            f.write_bytes(data[:len(data) // 2])
            damaged.append(f)
        garbage = next((root / table).rglob("part-0.parquet")).with_name("garbage.parquet")
        garbage.write_bytes(b"not a parquet file at all\n" * 40)
        damaged.append(garbage)
    page = next((root / "metrics").rglob("part-2.parquet"))
    data = bytearray(page.read_bytes())
    data[4:40] = b"\xff" * 36  # the first page header: the footer still reads
    page.write_bytes(bytes(data))
    return [*damaged, page]


@pytest.fixture
def damaged(tmp_path) -> tuple[Path, list[Path]]:
    """Six intact clips (part-0); clips x0..x2 only in files that are then damaged."""
    metrics, maps = run_rows()
    out = write_output(tmp_path / "out", metrics, maps, [error_row("bad", "r1")])
    extra = [f"x{i}" for i in range(3)]
    more = [metric_row(c, m, MODEL, deletion_auc=0.5) for c in extra[:2]
            for m in ("aosa", "center")]
    write_output(out, [metric_row(c, "aosa", MODEL, deletion_auc=0.5) for c in extra[2:]],
                 [saliency_row(c, "aosa", ramp(7), MODEL) for c in extra[2:]], part="part-2")
    write_output(out, more, [saliency_row(c, "aosa", ramp(7), MODEL) for c in extra],
                 [error_row("bad2", "r1")], part="part-1")
    return out, damage(out)


def test_every_damaged_file_is_named_and_no_other_row_is_lost(damaged, capsys):
    out, files = damaged
    assert run_pipeline.main(["report", "--output", str(out), "--no-animation"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "cannot be read" in line]
    assert len(warnings) == len(files)  # one line each, each file once
    for f in files:
        assert sum(str(f) in line for line in warnings) == 1, f
    assert any("failed while read" in line and "part-2" in line for line in warnings)
    rep = out / "report"
    page, md = (rep / "index.html").read_text(), (rep / "summary.md").read_text()
    for f in files:
        assert str(f) in page and str(f) in md
    # the intact rows are all there, the damaged files' rows are not (and were named)
    summary = {r["method"]: r for r in csv.DictReader((rep / "summary.csv").open())}
    assert summary["aosa"]["clips"] == summary["center"]["clips"] == str(len(CLIPS))
    failed = list(csv.DictReader((rep / "failures.csv").open()))
    assert [r["clip_id"] for r in failed] == ["bad"]


def test_files_of_another_table_or_types_are_named_by_their_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    metrics, maps = run_rows()
    out = write_output(tmp_path / "o", metrics, maps, [error_row("bad", "r1")])
    stray = out / "metrics" / "stray.parquet"  # an errors/ file: its shared columns agree
    shutil.copy(next((out / "errors").glob("*.parquet")), stray)
    retyped = out / "metrics" / "retyped.parquet"
    pq.write_table(pa.table({"clip_id": ["z"], "deletion_auc": pa.array([0.5], pa.float32()),
                             "start_frame": pa.array([3], pa.int64())}), retyped)
    run = load_run(str(out))
    reasons = {Path(u.path).name: u.reason for u in run.output.unreadable}
    assert reasons == {"stray.parquet": "no deletion_auc column: not a metrics/ file",
                       "retyped.parquet": "column start_frame is int64, expected int32"}
    assert sorted(set(run.strings("clip_id"))) == CLIPS


def test_two_variants_of_one_damaged_output_name_each_file_once(damaged, capsys):
    out, files = damaged
    assert cli.main(["--output", str(out), "--compare", str(out), "--baseline", "method=aosa",
                     "--no-animation", "--pick", "0"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cannot be read" in line]
    assert sorted(warnings) == sorted(set(warnings)) and len(warnings) == len(files)


def test_only_damaged_files_in_metrics_is_one_line_exit_2(tmp_path, capsys):
    metrics, maps = run_rows()
    out = write_output(tmp_path / "o", metrics, maps)
    for f in (out / "metrics").rglob("*.parquet"):
        f.write_bytes(f.read_bytes()[:100])
    assert run_pipeline.main(["report", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no readable Parquet file" in err


def test_latest_state_by_hand():
    written = latest_written([
        {"clip_id": "a", "model": "m", "weights_sha256": "w", "run_id": "r2"},
        {"clip_id": "c", "model": "m", "weights_sha256": "w", "run_id": "r1"},
        {"clip_id": "d", "model": "m", "weights_sha256": "w", "run_id": "r1"}])
    errors = [error_row("a", "r1", model="m", weights_sha256="w"),  # failed, then written
              error_row("b", "r1", model="m", weights_sha256="w"),  # failed twice: once
              error_row("b", "r3", "ValueError", model="m", weights_sha256="w"),
              error_row("c", "r2", model="m", weights_sha256="w"),  # written, then failed
              error_row("d", "r1", model="other", weights_sha256="w")]  # another network
    got = latest_failures(errors, written)
    assert [(e["clip_id"], e["run_id"], e["model"]) for e in got] == [
        ("c", "r2", "m"), ("d", "r1", "other"), ("b", "r3", "m")]


def test_failed_clips_are_counted_in_their_latest_state(tmp_path):
    metrics, maps = run_rows()
    for r in metrics:
        r["run_id"] = "20260101T000002Z-bbbbbb" if r["clip_id"] == "clip1" else (
            "20260101T000001Z-aaaaaa")
    r1, r2 = "20260101T000001Z-aaaaaa", "20260101T000002Z-bbbbbb"
    errors = [error_row("clip1", r1), error_row("clip1", r1, stage="explain"),  # then written
              error_row("lost", r1), error_row("lost", r2, "ValueError"),  # failed twice
              error_row("clip2", r2, "OSError")]  # written in r1, failed in r2
    out = write_output(tmp_path / "o", [dict(r, model="tiny") for r in metrics],
                       [dict(m, model="tiny") for m in maps], errors)
    assert cli.main(["--output", str(out), "--no-animation", "--pick", "0"]) == 0
    rep = out / "report"
    rows = list(csv.DictReader((rep / "failures.csv").open()))
    assert sorted((r["clip_id"], r["run_id"], r["error_type"]) for r in rows) == [
        ("clip2", r2, "OSError"), ("lost", r2, "ValueError")]
    assert set(rows[0]) >= {"clip_id", "video", "start_frame", "stage", "error_type",
                            "message", "run_id"}
    page, md = (rep / "index.html").read_text(), (rep / "summary.md").read_text()
    assert "2 failed clips (OSError 1, ValueError 1) in their latest state (dead-letter rows " \
           "in errors/: 5," in md
    assert page.count("<td>lost</td>") == 1 and "## Failed clips" in md


def test_no_failure_still_writes_an_empty_failures_csv(tmp_path):
    metrics, maps = run_rows()
    out = write_output(tmp_path / "o", metrics, maps)
    assert cli.main(["--output", str(out), "--no-animation", "--pick", "0"]) == 0
    text = (out / "report" / "failures.csv").read_text().splitlines()
    assert len(text) == 1 and text[0].startswith("clip_id,video,start_frame,stage")
    assert "No clip failed" in (out / "report" / "index.html").read_text()


def test_a_run_without_metrics_draws_no_plot_and_says_so(tmp_path):
    metrics = [metric_row(c, m, seconds=2.0) for c in CLIPS[:2] for m in ("aosa", "center")]
    maps = [saliency_row(c, m, ramp(i)) for i, c in enumerate(CLIPS[:2])
            for m in ("aosa", "center")]
    out = write_output(tmp_path / "o", metrics, maps)
    assert cli.main(["--output", str(out), "--no-animation", "--clips", "clip0"]) == 0
    rep = out / "report"
    assert list((rep / "figures").iterdir()) == []
    page = (rep / "index.html").read_text()
    assert page.count("No plots: these rows hold no metric values") == 1
    assert "figures/" not in page and "clips/clip0_clip0.png" in page


def heading_counts(text: str, pattern: str) -> dict[str, int]:
    found = re.findall(pattern, text)
    return {h: found.count(h) for h in found}


def test_each_section_and_table_appears_once_in_compare_mode(tmp_path):
    m1, s1 = run_rows(weights="a" * 64)
    m2, s2 = run_rows(weights="b" * 64, flip="clip1")
    base = write_output(tmp_path / "base", m1, s1, [error_row("bad", "r1")])
    cand = write_output(tmp_path / "cand", m2, s2)
    assert cli.main(["--output", str(cand), "--compare", str(base), "--no-animation",
                     "--changed", "1"]) == 0
    page = (cand / "report" / "index.html").read_text()
    md = (cand / "report" / "summary.md").read_text()
    html_heads = heading_counts(page, r"<h[12]>([^<]*)</h[12]>")
    md_heads = heading_counts(md, r"(?m)^#+ (.*)$")
    assert {"Compared with a baseline", "Candidate − baseline, on the same clips",
            "How much the maps changed", "Per method × model"} <= set(html_heads)
    assert set(html_heads.values()) == {1} and set(md_heads.values()) == {1}
    assert "How much the maps changed" in md_heads


def test_the_colour_map_is_fixed_and_covers_every_method():
    from transforms.methods.base import METHODS

    assert set(METHODS) <= set(colours.KNOWN)
    every = [*colours.KNOWN.values(), *colours.OTHERS]
    assert len(set(every)) == len(every)  # no two methods share a colour
    assert colours.method_colour("aosa c:3fa9c1") == colours.KNOWN["aosa"]
    assert colours.method_colour("mylab_cam") in colours.OTHERS
    assert colours.method_colour("mylab_cam") == colours.method_colour("mylab_cam w:1")


def has_colour(png: Path, rgb: tuple[int, int, int]) -> bool:
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    return bool((pixels == np.array(rgb)).all(axis=1).any())


def test_every_figure_uses_the_methods_colour(tmp_path):
    m1, s1 = run_rows()
    m2, s2 = run_rows(flip="clip2")
    base, cand = write_output(tmp_path / "b", m1, s1), write_output(tmp_path / "c", m2, s2)
    assert cli.main(["--output", str(cand), "--compare", str(base), "--no-animation",
                     "--changed", "1", "--clips", "clip3"]) == 0
    rep = cand / "report"
    aosa, center = colours.method_rgb("aosa"), colours.method_rgb("center")
    for name in ("distributions", "curves", "time_quality", "deltas"):
        png = rep / "figures" / f"{name}.png"
        assert has_colour(png, aosa) and has_colour(png, center), name
    from PIL import Image

    grid = np.asarray(Image.open(rep / "clips" / "clip3_clip3.png").convert("RGB"))
    left = grid[:, 0]  # the bar left of each method's label, in the method's colour
    assert (left == aosa).all(axis=1).any() and (left == center).all(axis=1).any()
    changed = np.asarray(Image.open(next((rep / "clips").glob("changed_*.png"))).convert("RGB"))
    assert (changed[:, 0] == aosa).all(axis=1).any()


GREEN = (0, 255, 0)


def test_real_runs_clip_failing_then_written_and_boxes_drawn(tmp_path, video_dir):
    """Two real runs: a clip whose video is missing fails, is written by the second run once the
    video exists (no failure left); the manifest's boxes are drawn on the strips."""
    from pipeline import job
    from tests.conftest import write_manifest
    from tests.test_pipeline import SMALL

    boxes = [[8, 6, 30, 28]] * 12  # source pixels (48 × 40 frames), every frame
    late = tmp_path / "late.avi"
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"video": str(video_dir / "good_0.avi"), "label": 0, "boxes": boxes},
        {"video": str(video_dir / "good_1.avi"), "label": 1},
        {"video": str(late), "label": 1}])
    out = tmp_path / "out"
    argv = ["--input", str(manifest), "--output", str(out), "--methods", "aosa,center", *SMALL,
            "--max-failed-fraction", "1"]
    first = job.run(argv)
    assert first["counts"]["clips_failed"] == 1
    shutil.copy(video_dir / "good_2.avi", late)
    second = job.run(argv)
    assert (second["counts"]["clips_written"], second["counts"]["clips_failed"]) == (1, 0)
    assert cli.main(["--output", str(out), "--clips", "good_0.avi,good_1.avi"]) == 0
    rep = out / "report"
    assert list(csv.DictReader((rep / "failures.csv").open())) == []
    page = (rep / "index.html").read_text()
    assert "0 failed clips in their latest state (dead-letter rows in errors/: 1," in page
    assert has_colour(next((rep / "clips").glob("good_0_*.png")), GREEN)
    assert not has_colour(next((rep / "clips").glob("good_1_*.png")), GREEN)
    # the boxes come from the manifest the run read: without it nothing is drawn, and said
    manifest.rename(tmp_path / "moved.jsonl")
    assert cli.main(["--output", str(out), "--clips", "good_0.avi", "--no-animation"]) == 0
    assert not has_colour(next((rep / "clips").glob("good_0_*.png")), GREEN)
    assert "boxes not drawn: manifest" in (rep / "index.html").read_text()
    assert json.loads((out / "run.json").read_text())["config"]["input"] == str(manifest)


def test_a_damaged_saliency_file_is_named_even_without_pictures(tmp_path, capsys):
    metrics, maps = run_rows()
    out = write_output(tmp_path / "o", metrics, maps)
    victim = next((out / "saliency").rglob("*.parquet"))
    victim.write_bytes(victim.read_bytes()[:-20])
    assert cli.main(["--output", str(out), "--pick", "0", "--no-animation"]) == 0
    assert f"{victim} cannot be read" in capsys.readouterr().err


def test_damaged_files_on_object_storage_are_named_by_their_uri(damaged, tmp_path, capsys):
    """The same damaged output in an S3 bucket (a real S3 API on loopback, moto's server)."""
    from tests.services import s3_server

    out, files = damaged
    with s3_server() as s3:
        s3.client().create_bucket(Bucket="dmg")
        for f in out.rglob("*.parquet"):
            s3.client().upload_file(str(f), "dmg", f"o/{f.relative_to(out)}")
        rep = tmp_path / "rep"
        assert run_pipeline.main(["report", "--output", "s3://dmg/o", "--report", str(rep),
                                  "--no-animation", *s3.flags()]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cannot be read" in line]
    assert sorted(line.split()[3] for line in warnings) == sorted(
        f"s3://dmg/o/{f.relative_to(out)}" for f in files)
    summary = {r["method"]: r for r in csv.DictReader((rep / "summary.csv").open())}
    assert summary["aosa"]["clips"] == str(len(CLIPS))
