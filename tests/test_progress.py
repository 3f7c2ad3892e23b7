"""The local progress line: worker ticks in files, driver counts, formatting, monitor thread."""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.progress import ProgressMonitor, count_progress, format_progress
from transforms.progress import RecordProgress, progress_file, record_progress

# ---------------------------------------------------------------- format_progress
# tqdm's meter: percent, 10-character bar (one cell per 10 %, ▌ for a half), done/total,
# [elapsed<remaining, seconds per clip = elapsed / done, statuses]; remaining = (total - done)
# × seconds per clip; times as MM:SS or H:MM:SS.


@pytest.mark.parametrize(("counts", "total", "elapsed", "line"), [
    ({"written": 2, "failed": 1}, 10, 36.9,  # 36.9 / 3 = 12.3 s/clip, 7 × 12.3 = 86.1 s
     "vidxai:  30%|███       | 3/10 clips [00:36<01:26, 12.30s/clip, 1 dead-lettered, "
     "0 skipped]"),
    ({"written": 5}, 20, 10.0,
     "vidxai:  25%|██▌       | 5/20 clips [00:10<00:30,  2.00s/clip, 0 dead-lettered, "
     "0 skipped]"),
    ({"written": 1, "skipped": 1, "failed": 2}, 1000, 8.0,  # 996 × 2 s = 33 min 12 s
     "vidxai:   0%|          | 4/1000 clips [00:08<33:12,  2.00s/clip, 2 dead-lettered, "
     "1 skipped]"),
    ({"written": 10}, 100, 4000.0,  # 90 × 400 s = 10 h
     "vidxai:  10%|█         | 10/100 clips [1:06:40<10:00:00, 400.00s/clip, 0 dead-lettered, "
     "0 skipped]"),
    ({"written": 40}, 50, 2.0,
     "vidxai:  80%|████████  | 40/50 clips [00:02<00:00,  0.05s/clip, 0 dead-lettered, "
     "0 skipped]"),
    ({"written": 2, "retried": 1}, 4, 3.0,
     "vidxai:  75%|███████▌  | 3/4 clips [00:03<00:01,  1.00s/clip, 0 dead-lettered, "
     "0 skipped, 1 retried]"),
])
def test_format_progress(counts: dict, total: int, elapsed: float, line: str):
    assert format_progress(counts, total, elapsed) == line


def test_format_progress_nothing_done_yet():
    assert format_progress({}, 10, 5.2) == (
        "vidxai:   0%|          | 0/10 clips [00:05<?, ?s/clip, 0 dead-lettered, 0 skipped]")
    assert format_progress(Counter(), None, 65) == (
        "vidxai: 0 clips [01:05, ?s/clip, 0 dead-lettered, 0 skipped]")


def test_format_progress_unknown_total_or_more_than_expected():
    assert format_progress({"written": 3, "failed": 1}, None, 10.0) == (
        "vidxai: 4 clips [00:10,  2.50s/clip, 1 dead-lettered, 0 skipped]")
    assert format_progress({"written": 12}, 10, 6.0) == (
        "vidxai: 12 clips [00:06,  0.50s/clip, 0 dead-lettered, 0 skipped]")


def test_format_progress_all_done():
    assert format_progress({"written": 9, "skipped": 1}, 10, 123.0) == (
        "vidxai: 100%|██████████| 10/10 clips [02:03<00:00, 12.30s/clip, 0 dead-lettered, "
        "1 skipped]")


def test_format_progress_fills_and_fits_a_width():
    for width in (60, 120):
        line = format_progress({"written": 2, "failed": 1}, 10, 36.9, width)
        assert len(line) == width and line.startswith("vidxai:  30%|")
    wide = format_progress({"written": 5}, 10, 1.0, 100)
    bar = wide[wide.index("|") + 1:wide.rindex("|")]
    assert bar.count("█") * 2 == len(bar)  # half done: half the bar


# ---------------------------------------------------------------- record / count


def _writer(directory: str, status: str, n: int, start: threading.Event) -> None:
    start.wait(30)
    for i in range(n):
        record_progress(directory, status, 2 if i % 10 == 0 else 1)


def test_record_progress_from_two_processes(tmp_path: Path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "p"), status, 300, start))
             for status in ("written", "failed")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list((tmp_path / "p").glob("*.log"))) == 2
    assert count_progress(str(tmp_path / "p")) == Counter(written=330, failed=330)


def test_record_progress_from_threads_of_one_process(tmp_path: Path):
    threads = [threading.Thread(target=record_progress, args=(str(tmp_path), s, 50))
               for s in ("written", "failed", "skipped") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count_progress(str(tmp_path)) == Counter(written=200, failed=200, skipped=200)
    assert os.listdir(tmp_path) == [os.path.basename(progress_file(str(tmp_path)))]


def test_record_progress_rejects_multi_line_status(tmp_path: Path):
    with pytest.raises(ValueError):
        record_progress(str(tmp_path), "written\nfailed")
    with pytest.raises(ValueError):
        record_progress(str(tmp_path), "")
    record_progress(str(tmp_path), "written", n=0)
    assert count_progress(str(tmp_path)) == Counter()


def test_count_progress_ignores_truncated_last_line(tmp_path: Path):
    (tmp_path / "a-1.log").write_bytes(b"written\nfailed\nwrit")
    (tmp_path / "b-2.log").write_bytes(b"written\n")
    (tmp_path / "c-3.log").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"written\n")
    assert count_progress(str(tmp_path)) == Counter(written=2, failed=1)


def test_count_progress_missing_directory(tmp_path: Path):
    assert count_progress(str(tmp_path / "nope")) == Counter()


# ---------------------------------------------------------------- ProgressMonitor


def test_monitor_shows_the_final_count(tmp_path: Path):
    stream = io.StringIO()
    with ProgressMonitor(str(tmp_path), 5, stream=stream, interval=0.02, min_gap=0.0):
        record_progress(str(tmp_path), "written", 3)
        record_progress(str(tmp_path), "failed")
        deadline = time.monotonic() + 5
        while "4/5" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "4/5 clips" in stream.getvalue()  # printed by the thread, before exit
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("vidxai:  80%|████████  | 4/5 clips [00:")
    assert lines[-1].endswith("s/clip, 1 dead-lettered, 0 skipped]")
    assert "\r" not in stream.getvalue()


NOTHING = "vidxai: 0 clips [00:00, ?s/clip, 0 dead-lettered, 0 skipped]"


def test_monitor_prints_only_changes_and_always_a_final_line(tmp_path: Path):
    stream = io.StringIO()
    with ProgressMonitor(str(tmp_path), None, stream=stream, interval=0.01):
        time.sleep(0.2)  # nothing recorded: the first look prints, later ones do not
        assert stream.getvalue() == f"{NOTHING}\n"
    assert stream.getvalue().splitlines() == [NOTHING] * 2


def test_monitor_prints_a_heartbeat_while_a_slow_clip_runs(tmp_path: Path):
    """No change for longer than ``heartbeat``: the line is printed again (with a fake clock
    that advances 10 s per look, a 25 s heartbeat prints every third look)."""
    ticks = iter(range(0, 10_000, 10))
    stream = io.StringIO()
    with ProgressMonitor(str(tmp_path), 5, stream=stream, interval=0.01, heartbeat=25.0,
                         clock=lambda: float(next(ticks))):
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4 and all(line.startswith("vidxai:   0%|          | 0/5 clips [")
                                   for line in lines)
    elapsed = [line.split("[")[1].split("<")[0] for line in lines]
    assert elapsed == sorted(elapsed) and elapsed[-1] != "00:00"  # the fake clock's time


def test_monitor_throttles_a_log_to_one_line_per_min_gap(tmp_path: Path):
    """Counts change at every look and the fake clock advances 1 s per look: a log stream gets
    a line only every ``min_gap`` = 5 s (plus the first and the final line)."""
    ticks = iter(range(0, 10_000))
    stream = io.StringIO()
    looks = []

    def clock() -> float:
        t = float(next(ticks))
        looks.append(t)
        record_progress(str(tmp_path), "written")  # something new before every look
        return t

    with ProgressMonitor(str(tmp_path), None, stream=stream, interval=0.005, min_gap=5.0,
                         heartbeat=1e9, clock=clock):
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert 3 <= len(lines) <= len(looks) / 5 + 3, (len(lines), len(looks))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_monitor_rewrites_the_line_on_a_terminal(tmp_path: Path):
    stream = _Tty()
    with ProgressMonitor(str(tmp_path), 2, stream=stream, interval=0.01) as monitor:
        record_progress(str(tmp_path), "written")
        deadline = time.monotonic() + 5
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        record_progress(str(tmp_path), "written")
    out = stream.getvalue()
    assert out.startswith("\rvidxai:  50%|") and "| 1/2 clips [" in out and out.endswith("\n")
    assert out.count("\n") == 1
    last = out.rstrip("\n").rsplit("\r", 1)[-1]
    assert last.startswith("vidxai: 100%|") and "| 2/2 clips [" in last
    # every draw fills the terminal's width but its last column (80 without a real terminal)
    width = shutil.get_terminal_size().columns - 1
    assert {len(draw.rstrip("\n")) for draw in out.split("\r")[1:]} == {width}
    assert monitor.counts == Counter(written=2)


def test_monitor_stops_promptly(tmp_path: Path):
    started = time.monotonic()
    with ProgressMonitor(str(tmp_path), 3, stream=io.StringIO(), interval=60):
        pass
    assert time.monotonic() - started < 2


class _Broken(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("stream closed")


def test_monitor_never_raises_into_the_caller(tmp_path: Path):
    with ProgressMonitor(str(tmp_path), 3, stream=_Broken(), interval=0.01):
        record_progress(str(tmp_path), "written")
        time.sleep(0.05)


def test_monitor_lets_the_body_exception_through(tmp_path: Path):
    stream = io.StringIO()
    with pytest.raises(KeyError), ProgressMonitor(str(tmp_path), 3, stream=stream, interval=9):
        raise KeyError("boom")
    assert stream.getvalue() == (
        "vidxai:   0%|          | 0/3 clips [00:00<?, ?s/clip, 0 dead-lettered, 0 skipped]\n")


def test_monitor_defaults_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with ProgressMonitor(str(tmp_path), 1, interval=9):
        record_progress(str(tmp_path), "written")
    err = capsys.readouterr().err
    assert err.startswith("vidxai: 100%|██████████| 1/1 clips [00:00<00:00, ") and err.endswith(
        "s/clip, 0 dead-lettered, 0 skipped]\n")


# ---------------------------------------------------------------- RecordProgress in Beam


def test_record_progress_transform_in_a_pipeline(tmp_path: Path):
    # never the default DirectRunner: Beam 2.77's tries to download Prism
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([1, 2, 3]) | RecordProgress(str(tmp_path), "written")
        assert_that(out, equal_to([]))
    assert count_progress(str(tmp_path)) == Counter(written=3)


def test_record_progress_transform_without_directory_is_a_no_op(tmp_path: Path):
    with beam.Pipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([1, 2, 3]) | RecordProgress(None, "written")
        assert_that(out, equal_to([]))
    assert list(tmp_path.iterdir()) == []


def test_record_progress_transform_rejects_bad_status():
    with pytest.raises(ValueError):
        RecordProgress(None, "a\nb")
