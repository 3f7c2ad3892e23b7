"""The report (``run_pipeline.py report``) on small generated outputs and on a real run."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import run_pipeline
from pipeline.apps.report import cli, render, tables
from pipeline.apps.report.load import load_run
from pipeline.apps.report.read import Selection, read_maps
from pipeline.apps.report.stats import bootstrap_ci, paired
from pipeline.outputs import NoOutput
from tests.report_outputs import metric_row, saliency_row, write_output

T, S = 4, 8
CLIPS = [f"clip{i}" for i in range(6)]
DELETION = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
MODEL = "mylab.nets:build"  # ':' is URI-encoded in the partition path


def ramp(seed: int) -> np.ndarray:
    """A (T, S, S) map with distinct values, its maximum moving with the seed."""
    return np.random.default_rng(seed).random((T, S, S)).astype(np.float32)


def run_rows(weights: str = "w" * 64, flip: str | None = None, model: str = MODEL):
    """Metrics and saliency rows of aosa and center on six clips of two classes.

    aosa's deletion is DELETION; center's is 0.2 higher on every clip; center's map of clip0
    is constant. ``flip`` negates aosa's map of that clip (its ranking reverses).
    """
    metrics, maps = [], []
    for i, cid in enumerate(CLIPS):
        label = i % 2
        for method, d in (("aosa", DELETION[i]), ("center", DELETION[i] + 0.2)):
            metrics.append(metric_row(
                cid, method, model, weights_sha256=weights, label=label,
                label_name=f"class{label}", predicted=0, predicted_name="class0",
                correct=label == 0, deletion_auc=d, insertion_auc=1 - d,
                deletion_curve=[0.9, 0.5, d, 0.1, 0.0], insertion_curve=[0.0, 0.4, 0.8, 0.9, 1.0],
                spt_hits=i, spt_frames=T + 1, spt_rate=i / (T + 1)))
            sal = ramp(i) if method == "aosa" else np.full((T, S, S), 0.5 if i == 0 else 0.0)
            if method == "center" and i:
                sal = np.exp(-((np.arange(S) - S / 2) ** 2))[None, None, :] * np.ones((T, S, 1))
            if flip == cid and method == "aosa":
                sal = -sal
            maps.append(saliency_row(cid, method, np.asarray(sal, np.float32), model,
                                     weights_sha256=weights))
    return metrics, maps


@pytest.fixture
def out(tmp_path) -> Path:
    metrics, maps = run_rows()
    errors = [{"clip_id": "bad", "video": "bad.avi", "stage": "decode",
               "error_type": "DecodeError", "message": "empty"}]
    return write_output(tmp_path / "out", metrics, maps, errors)


def test_mean_median_and_intervals_by_hand(out):
    run = load_run(str(out))
    rows = {r["method"]: r for r in tables.summarise(run)}
    a = rows["aosa"]
    assert a["model"] == MODEL and a["clips"] == 6  # the partition value decoded
    assert a["deletion_auc_mean"] == pytest.approx(sum(DELETION) / 6)  # 0.35
    assert a["deletion_auc_median"] == pytest.approx((0.3 + 0.4) / 2)
    assert a["spt_pooled"] == pytest.approx(sum(range(6)) / (6 * (T + 1)))
    assert a["accuracy"] == pytest.approx(0.5)
    assert a["deletion_auc_lo"] < a["deletion_auc_mean"] < a["deletion_auc_hi"]
    # Two clips valued 0 and 1: resampled means are 0, 0.5 or 1 (p = 1/4, 1/2, 1/4), so the
    # 2.5 % and 97.5 % quantiles of 2000 resamples are 0 and 1.
    assert bootstrap_ci(np.array([0.0, 1.0])) == (0.5, 0.0, 1.0)
    # center is 0.2 worse on deletion on every clip: the paired difference is exactly 0.2.
    pair = next(r for r in tables.method_pairs(run) if r["a"] == "center")
    assert (pair["b"], pair["deletion_auc_clips"]) == ("aosa", 6)
    assert pair["deletion_auc_diff"] == pytest.approx(0.2)
    assert (pair["deletion_auc_lo"], pair["deletion_auc_hi"]) == pytest.approx((0.2, 0.2))
    assert pair["deletion_auc_win"] == 0.0  # lower deletion is better: center never wins
    assert pair["deletion_auc_p"] == pytest.approx(0.03125)  # Wilcoxon, n = 6, all one sign
    acc = {r["class"]: r for r in tables.accuracy_per_class(run)}
    assert (acc["class0"]["accuracy"], acc["class1"]["accuracy"]) == (1.0, 0.0)
    assert acc["class1"]["clips"] == 3 and acc["class1"]["most_confused_with"] == "class0"


def test_most_confused_class_is_the_most_frequent_wrong_one_first_seen_on_ties(tmp_path):
    """Eight clips of class "c" each mistaken for another class: a tie of eight, which the
    first clip decides (rows are read in clip order); then one class twice wins."""
    wrong = [f"m{k}" for k in (7, 3, 5, 0, 6, 1, 4, 2)]

    def rows(names):
        return [metric_row(f"{i:02d}", "aosa", label=0, label_name="c", predicted=1,
                           predicted_name=n, correct=False) for i, n in enumerate(names)]
    maps = [saliency_row("00", "aosa", np.zeros((T, S, S), np.float32))]
    for names, expected in ((wrong, "m7"), ([*wrong, "m4"], "m4")):
        out = write_output(tmp_path / expected, rows(names), maps)
        (row,) = tables.accuracy_per_class(load_run(str(out)))
        assert (row["clips"], row["most_confused_with"]) == (len(names), expected)


def test_paired_win_rate_counts_ties_half():
    p = paired(np.array([1.0, 2.0, 3.0, np.nan]), np.array([0.0, 2.0, 4.0, 1.0]))
    assert p.clips == 3 and p.win_rate == pytest.approx(0.5)  # one win, one tie, one loss


def test_every_file_written_and_not_empty(out, capsys):
    assert run_pipeline.main(["report", "--output", str(out), "--pick", "1"]) == 0
    rep = out / "report"
    for name in ("index.html", "summary.md", "summary.csv", "pairs.csv", "classes.csv",
                 "accuracy.csv", "figures/distributions.png", "figures/curves.png",
                 "figures/time_quality.png"):
        assert (rep / name).stat().st_size > 100, name
    pics = sorted(p.name for p in (rep / "clips").iterdir())
    # best and worst aosa clip by insertion: clip0 (0.9) and clip5 (0.4)
    assert pics == ["clip0_clip0.gif", "clip0_clip0.png", "clip5_clip5.gif", "clip5_clip5.png"]
    from PIL import Image

    with Image.open(rep / "clips" / "clip0_clip0.gif") as gif:
        assert gif.n_frames == T  # every frame of the clip
    summary = list(csv.DictReader((rep / "summary.csv").open()))
    assert [r["method"] for r in summary] == ["aosa", "center"]
    assert float(summary[0]["deletion_auc_mean"]) == pytest.approx(0.35)
    md = (rep / "summary.md").read_text()
    assert "| mylab.nets:build | aosa | 6 | 0.350 [" in md
    page = (rep / "index.html").read_text()
    assert "DecodeError 1" in page and "frames unavailable" in page
    assert "T-PT" not in md  # no frame ranges in this run: no T-PT columns


def test_constant_map_is_drawn_grey_and_said_to_be(out):
    from pipeline.apps.visualize import method_grid

    frames = np.random.default_rng(0).integers(0, 255, (T, S, S, 3), dtype=np.uint8)
    grid = method_grid(frames, [("aosa", ramp(0)), ("flat", np.full((T, S, S), 0.5))],
                       scale="minmax")
    rows = np.split(grid[:, 110:], 3, axis=0)  # frames, aosa, flat (labels cut off)
    flat = rows[2].astype(int)
    assert (flat[..., 0] == flat[..., 1]).all() and (flat[..., 1] == flat[..., 2]).all()
    assert not (rows[1][..., 0] == rows[1][..., 2]).all()  # the real map is coloured


def test_read_maps_returns_only_the_keys_asked_for(out):
    maps = read_maps(str(out), [("clip3", "aosa"), ("clip4", "center")])
    assert set(maps) == {("clip3", "aosa"), ("clip4", "center")}
    row, sal = maps[("clip3", "aosa")]
    assert row["model"] == MODEL and sal.shape == (T, S, S)
    np.testing.assert_allclose(sal, ramp(3).astype(np.float16), rtol=0)


def test_the_flat_layout_reads_the_same(out, tmp_path):
    metrics, maps = run_rows()
    flat = write_output(tmp_path / "flat", metrics, maps, hive=False)
    assert not (flat / "metrics" / f"model={MODEL}").exists()
    assert tables.summarise(load_run(str(flat))) == tables.summarise(load_run(str(out)))
    assert set(read_maps(str(flat), [("clip1", "aosa")])) == {("clip1", "aosa")}


def test_compare_two_outputs(out, tmp_path):
    metrics, maps = run_rows(flip="clip2")
    for r in metrics:  # the candidate's aosa deletes 0.05 better on every clip
        if r["method"] == "aosa":
            r["deletion_auc"] -= 0.05
    cand = write_output(tmp_path / "cand", metrics, maps)
    assert cli.main(["--output", str(cand), "--compare", str(out), "--changed", "1",
                     "--no-animation"]) == 0
    rows = {r["method"]: r for r in csv.DictReader((cand / "report" / "compare.csv").open())}
    assert float(rows["aosa"]["deletion_auc_diff"]) == pytest.approx(-0.05)
    assert float(rows["aosa"]["deletion_auc_improved"]) == 1.0
    assert float(rows["center"]["deletion_auc_diff"]) == pytest.approx(0.0)
    corr = {r["method"]: r for r in csv.DictReader((cand / "report" /
                                                    "map_correlation.csv").open())}
    assert float(corr["aosa"]["rho_median"]) == 1.0
    assert float(corr["aosa"]["rho_min"]) == pytest.approx(-1.0)  # clip2's reversed map
    assert int(corr["center"]["clips"]) == 5  # clip0's constant maps have no ranking
    # the clip whose map reversed is pictured, baseline above candidate
    assert (cand / "report" / "clips" / "changed_clip2_clip2_aosa.png").stat().st_size > 0
    assert (cand / "report" / "figures" / "deltas.png").stat().st_size > 0


def test_compare_two_variants_inside_one_output(tmp_path):
    m1, s1 = run_rows(weights="a" * 64)
    m2, s2 = run_rows(weights="b" * 64, flip="clip1")
    both = write_output(tmp_path / "both", m1 + m2, s1 + s2)
    assert cli.main(["--output", str(both), "--compare", str(both), "--baseline",
                     "weights_sha256=aaaa", "--no-animation", "--pick", "0"]) == 0
    md = (both / "report" / "summary.md").read_text()
    assert "rows with weights_sha256!=aaaa" in md and "w:aaaaaa" not in md  # candidate only
    assert "clip1_clip1_aosa" in " ".join(p.name for p in (both / "report" / "clips").iterdir())
    with pytest.raises(ValueError, match="needs one --baseline"):
        cli.parse_args(["--output", str(both), "--compare", str(both)])


@pytest.mark.parametrize("make", ["missing", "empty", "no_rows"])
def test_missing_or_empty_output_gives_one_line(tmp_path, capsys, make):
    path = tmp_path / "o"
    if make != "missing":
        path.mkdir()
    if make == "no_rows":
        (path / "metrics").mkdir()
    assert run_pipeline.main(["report", "--output", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vidxai report: error: ")
    assert {"missing": "does not exist", "empty": "has no metrics/ table",
            "no_rows": "holds no Parquet files"}[make] in err


def test_where_video_selects_by_path_prefix(out, capsys):
    """``--where video=PREFIX`` keeps the clips whose video path starts with it, ``!=`` the
    others; with a method selection both must hold."""
    rep = out / "sel"
    assert run_pipeline.main(["report", "--output", str(out), "--report", str(rep),
                              "--where", "video=/nowhere/clip1", "--no-animation"]) == 0
    summary = list(csv.DictReader((rep / "summary.csv").open()))
    assert {(r["method"], r["clips"]) for r in summary} == {("aosa", "1"), ("center", "1")}
    assert run_pipeline.main(["report", "--output", str(out), "--report", str(rep),
                              "--where", "video!=/nowhere/clip1", "--where", "method=aosa",
                              "--no-animation"]) == 0
    summary = list(csv.DictReader((rep / "summary.csv").open()))
    assert [(r["method"], r["clips"]) for r in summary] == [("aosa", "5")]
    capsys.readouterr()


def test_selection_syntax():
    assert str(Selection.parse("weights_sha256!=ab")) == "weights_sha256!=ab"
    assert str(Selection.parse("video=bench/")) == "video=bench/"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        Selection.parse("colour=red")
    with pytest.raises(NoOutput, match="no rows matching method=osa"):
        raise NoOutput("x/metrics has no rows matching method=osa")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="no chromium on this machine (Debian package "
                                                "'chromium'; CI installs it): the report's "
                                                "page was not opened in a browser")
def test_the_page_opens_in_headless_chromium(out, tmp_path):
    assert cli.main(["--output", str(out)]) == 0
    url = (out / "report" / "index.html").resolve().as_uri()
    flags = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--enable-logging=stderr", "--v=0",
                          "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    errors = json.loads(re.search(r'data-errors="([^"]*)"', body).group(1)
                        .replace("&quot;", '"'))
    assert errors == []  # no script error, every image loaded
    assert int(re.search(r'data-images="(\d+)"', body).group(1)) >= 7
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr.upper().replace(
        "CONSOLE_", "")
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,900", url],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (900, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text and tables, not blank


def test_report_on_a_real_pipeline_run(tmp_path, video_dir):
    from pipeline import job
    from tests.conftest import write_manifest
    from tests.test_pipeline import SMALL

    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"video": str(p), "label": i % 2} for i, p in enumerate(sorted(video_dir.glob("*.avi")))])
    out = tmp_path / "out"
    job.run(["--input", str(manifest), "--output", str(out), "--methods", "aosa,center",
             *SMALL])
    assert cli.main(["--output", str(out), "--pick", "1", "--no-animation"]) == 0
    rep = out / "report"
    summary = list(csv.DictReader((rep / "summary.csv").open()))
    assert {r["method"] for r in summary} == {"aosa", "center"}
    assert all(int(r["clips"]) == 3 for r in summary)
    page = (rep / "index.html").read_text()
    assert "frames unavailable" not in page  # the clips' frames were decoded again
    assert len(list((rep / "clips").glob("*.png"))) == 2


def test_several_clips_of_one_video_are_pictured_apart(tmp_path):
    metrics, maps = [], []
    for k in range(2):
        cid = f"/data/walk.mp4#s{k}"
        metrics.append(metric_row(cid, "aosa", video="/data/walk.mp4", deletion_auc=0.1 * k,
                                  insertion_auc=0.5))
        maps.append(saliency_row(cid, "aosa", ramp(k), video="/data/walk.mp4"))
    out = write_output(tmp_path / "o", metrics, maps)
    assert cli.main(["--output", str(out), "--clips", "walk.mp4", "--no-animation"]) == 0
    pics = sorted(p.name for p in (out / "report" / "clips").iterdir())
    assert pics == ["walk__data_walk.mp4_s0.png", "walk__data_walk.mp4_s1.png"]


def test_a_run_without_metrics_still_reports_its_costs(tmp_path):
    metrics = [metric_row(c, "aosa", seconds=2.0, forward_passes=17) for c in CLIPS[:2]]
    maps = [saliency_row(c, "aosa", ramp(i)) for i, c in enumerate(CLIPS[:2])]
    out = write_output(tmp_path / "o", metrics, maps)
    assert cli.main(["--output", str(out), "--no-animation"]) == 0
    row = next(csv.DictReader((out / "report" / "summary.csv").open()))
    assert (row["clips"], float(row["seconds"]), float(row["forward_passes"])) == ("2", 2.0, 17)
    assert "deletion_auc_mean" not in row


def test_a_second_report_replaces_the_first_ones_pictures(out):
    assert cli.main(["--output", str(out), "--clips", "clip1", "--no-animation"]) == 0
    assert cli.main(["--output", str(out), "--clips", "clip2", "--no-animation"]) == 0
    assert sorted(p.name for p in (out / "report" / "clips").iterdir()) == ["clip2_clip2.png"]


def tiny_maps(rows: list[dict]) -> list[dict]:
    """A 2 × 2 × 2 zero map for each metrics row (the output needs its saliency/ table)."""
    return [saliency_row(r["clip_id"], r["method"], np.zeros((2, 2, 2), np.float32))
            for r in rows]


def test_chooser_picks_the_cheapest_method_not_shown_worse_than_the_best(tmp_path):
    """Known answers on 8 clips. Insertion: slow is best, fast is worse by ≤ 0.01 with mixed
    signs (Wilcoxon p ≫ 0.05: tied), bad is worse on every clip (p = 2/256 < 0.05), random is
    worse on every clip. Seconds: slow 10, fast 1, bad 0.1, random 0.01. So the choice is fast
    (10× cheaper), never bad (cheaper but shown worse) nor random (a reference)."""
    base = [0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85]
    jitter = [0.01, -0.01, 0.005, -0.005, 0.01, -0.01, 0.002, -0.002]
    rows = []
    for i, b in enumerate(base):
        for method, value, secs in (("slow", b, 10.0), ("fast", b + jitter[i], 1.0),
                                    ("bad", b - 0.2, 0.1), ("random", b - 0.3, 0.01)):
            rows.append(metric_row(f"c{i}", method, insertion_auc=value, seconds=secs))
    run = load_run(str(write_output(tmp_path / "out", rows, tiny_maps(rows))))
    (row,) = tables.chooser(run)
    assert (row["metric"], row["best"], row["choice"]) == ("insertion", "slow", "fast")
    assert row["best_seconds"] / row["choice_seconds"] == pytest.approx(10.0)
    assert row["tied"] == "slow, fast" and not row["reference_tied"] and row["clips"] == 8
    table = render.chooser_table([row])
    assert table.cells[0][5] == "10.0×"


def test_chooser_says_when_a_reference_ties_with_the_best(tmp_path):
    """Two clips cannot separate anything: every method ties, random included, and the table
    says the metric does not separate the methods; the choice is still the cheapest real one."""
    rows = [metric_row(f"c{i}", m, insertion_auc=v + i / 10, seconds=s)
            for i in range(2) for m, v, s in (("aosa", 0.6, 5.0), ("gradcam", 0.5, 0.1),
                                               ("random", 0.2, 0.01))]
    run = load_run(str(write_output(tmp_path / "out", rows, tiny_maps(rows))))
    (row,) = tables.chooser(run)
    assert (row["best"], row["choice"], row["reference_tied"]) == ("aosa", "gradcam", True)
    assert "does not separate" in render.chooser_table([row]).cells[0][-1]


def test_the_time_mass_is_summarised_paired_and_chosen_on(tmp_path):
    """Runs with frame ranges: the share of above-median mass in the true frames
    (``t_above_median_share``) gets its mean and interval, its paired test and its chooser
    row, by hand on 8 clips: aosa_t at 0.9 + i/100, aosa at 0.5 (worse on every clip)."""
    rows = []
    for i in range(8):
        rows.append(metric_row(f"c{i}", "aosa_t", t_above_median_share=0.9 + i / 100,
                               tpt_hit=True, seconds=2.0))
        rows.append(metric_row(f"c{i}", "aosa", t_above_median_share=0.5, tpt_hit=True,
                               seconds=1.0))
    run = load_run(str(write_output(tmp_path / "out", rows, tiny_maps(rows))))
    summary = {r["method"]: r for r in tables.summarise(run)}
    assert summary["aosa_t"]["t_above_median_share_mean"] == pytest.approx(0.935)
    assert summary["aosa"]["t_above_median_share_mean"] == pytest.approx(0.5)
    (pair,) = tables.method_pairs(run, "aosa")
    assert pair["t_above_median_share_diff"] == pytest.approx(0.435)
    assert pair["t_above_median_share_p"] == pytest.approx(2 / 256)
    chosen = {r["metric"]: r for r in tables.chooser(run)}
    assert (chosen["T-mass"]["best"], chosen["T-mass"]["choice"]) == ("aosa_t", "aosa_t")
