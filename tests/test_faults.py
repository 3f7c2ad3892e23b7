"""Operator-grade failure handling: what a scheduler sees (exit status, one line) and that no
committed row is lost or duplicated, for every fault a scheduled job meets."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import run_pipeline
from pipeline import job
from pipeline.lock import Lease
from pipeline.outputs import read_table, table_files
from tests.conftest import write_manifest
from tests.test_dataset_scale import assert_exactly_once, identities, many_videos, maps

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model", "tiny", "--size", "24", "--num-frames", "8", "--stride", "6",
         "--topk", "2", "--batch-size", "4", "--metric-steps", "3", "--device", "cpu",
         "--no-progress"]


def main(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = run_pipeline.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def error_line(argv: list[str], capsys, code: int) -> str:
    got, err = main(argv, capsys)
    lines = [line for line in err if line.startswith("vidxai:")]
    assert got == code and len(lines) == 1, (got, err)
    return lines[0]


# --- everything checkable before any work ----------------------------------------------------


def test_a_spreadsheet_csv_with_bom_and_crlf_runs(tmp_path, video_dir, capsys):
    manifest = tmp_path / "clips.csv"
    lines = ["video,label"] + [f"{p},1" for p in sorted(video_dir.iterdir())]
    manifest.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    code, _ = main(["--input", str(manifest), "--output", str(tmp_path / "o"), *SMALL,
                    "--target", "label"], capsys)
    assert code == 0
    met = read_table(str(tmp_path / "o" / "metrics"), ["label"]).to_pylist()
    assert len(met) == 3 and {r["label"] for r in met} == {1}


@pytest.mark.parametrize("content, expected", [
    (b"path,label\na.avi,1\n", "has no 'video' column; columns found: path, label"),
    (b"video,lable\na.avi,1\n", "unknown column 'lable' (did you mean 'label'?)"),
    (b"video,label\n", "holds no rows"),
    ("video\ncaf\xe9.avi\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9"),
    (b"video\na.avi\n", "--target label needs a 'label' column"),
])
def test_unusable_manifests_fail_before_any_work(tmp_path, capsys, content, expected):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(content)
    line = error_line(["--input", str(manifest), "--output", str(tmp_path / "o"), *SMALL,
                       "--target", "label"], capsys, 2)
    assert expected in line, line
    assert not (tmp_path / "o").exists()


def test_an_output_that_cannot_be_written_fails_before_any_work(tmp_path, video_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = error_line(["--input", str(video_dir), "--output", str(blocker), *SMALL], capsys, 2)
    assert "is a file, not a directory" in line
    line = error_line(["--input", str(video_dir), "--output", str(blocker / "sub"), *SMALL],
                      capsys, 2)
    assert f"cannot be created: {blocker} is a file" in line


# --- exit status: nothing written, too many dead letters, not a data error ------------------


def test_a_run_that_writes_nothing_exits_1(tmp_path, bad_inputs, capsys):
    d = tmp_path / "bad_only"
    d.mkdir()
    for name in ("zero", "text", "short"):
        bad_inputs[name].rename(d / bad_inputs[name].name)
    line = error_line(["--input", str(d), "--output", str(tmp_path / "o"), *SMALL,
                       "--max-failed-fraction", "1"], capsys, 1)
    assert "nothing was written: all 3 clips were dead-lettered" in line
    info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert info["counts"]["clips_failed"] == 3 and info["counts_consistent"]


def test_the_default_failure_threshold_fails_a_mostly_broken_run(tmp_path, video_dir,
                                                                bad_inputs, capsys):
    bad_inputs["short"].rename(video_dir / "short.avi")  # 1 of 4 = 25 % > 10 %
    line = error_line(["--input", str(video_dir), "--output", str(tmp_path / "o"), *SMALL],
                      capsys, 1)
    assert "1 of 4 clips were dead-lettered (25% > --max-failed-fraction 0.1)" in line
    assert len(read_table(str(tmp_path / "o" / "metrics"), ["clip_id"])) == 3  # kept


def test_an_unexpected_error_fails_the_run_naming_the_clip(tmp_path, video_dir, capsys,
                                                         monkeypatch):
    from transforms.flow import FlowFn
    from transforms.records import clip_ref

    real = FlowFn.apply

    def apply(self, item):
        if "good_1" in clip_ref(item).video:
            raise RuntimeError("a bug, not bad data")
        yield from real(self, item)

    monkeypatch.setattr(FlowFn, "apply", apply)
    line = error_line(["--input", str(video_dir), "--output", str(tmp_path / "o"), *SMALL],
                      capsys, 1)
    assert "good_1.avi) failed in flow: RuntimeError: a bug, not bad data" in line, line
    assert "re-run to resume" in line
    info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert "failed in flow" in info["failure"]
    assert read_table(str(tmp_path / "o" / "errors")) is None  # not a dead letter


def test_device_out_of_memory_is_retried_at_half_the_batch_then_dead_lettered(
        tmp_path, video_dir, monkeypatch):
    from transforms import explain

    real, seen = explain.explain_clip, []

    def limited(scorer, item, methods, settings, limit):
        seen.append(settings.batch_size)
        if settings.batch_size > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(scorer, item, methods, settings)

    args = ["--input", str(video_dir), *SMALL, "--methods", "aosa"]
    monkeypatch.setattr(explain, "explain_clip",
                        lambda *a: limited(*a, limit=2))
    job.run([*args, "--output", str(tmp_path / "retried")])
    assert seen[:2] == [4, 2]  # tried at 4, then at 2
    monkeypatch.setattr(explain, "explain_clip", real)
    job.run([*args, "--output", str(tmp_path / "small"), "--batch-size", "2"])
    a, b = maps(tmp_path / "retried"), maps(tmp_path / "small")
    assert a.keys() == b.keys() and len(a) == 3
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])

    monkeypatch.setattr(explain, "explain_clip", lambda *a: limited(*a, limit=1))
    with pytest.raises(job.RunFailed, match="nothing was written") as failed:
        job.run([*args, "--output", str(tmp_path / "dead"), "--batch-size", "8"])
    assert failed.value.info["counts"]["clips_failed"] == 3
    errors = read_table(str(tmp_path / "dead" / "errors")).to_pylist()
    assert all("device out of memory at --batch-size 8 and again at 4" in e["message"]
               for e in errors)


def test_a_frame_range_outside_the_video_is_a_dead_letter(tmp_path, video_dir):
    good = sorted(video_dir.iterdir())
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"video": str(good[0]), "frame_range": [40, 50]},  # the video has 12 frames
        {"video": str(good[1]), "frame_range": [2, 6]},
    ])
    info = job.run(["--input", str(manifest), "--output", str(tmp_path / "o"), *SMALL,
                    "--max-failed-fraction", "1"])
    assert info["counts"]["clips_written"] == 1 and info["counts"]["clips_failed"] == 1
    err = read_table(str(tmp_path / "o" / "errors")).to_pylist()[0]
    assert "frame_range [40, 50) starts after the video's last frame (it has 12 frames)" \
        in err["message"]


# --- damaged outputs -------------------------------------------------------------------------


def _truncate(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def _garbage(path: str) -> None:
    Path(path).write_bytes(b"this is not parquet" * 20)


def _bad_page(path: str) -> None:
    data = bytearray(Path(path).read_bytes())
    data[4:40] = b"\xff" * 36  # the first page header; the footer still reads
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("table, damage_fn", [("metrics", _truncate), ("saliency", _garbage),
                                              ("errors", _truncate), ("metrics", _bad_page)])
def test_a_damaged_file_is_quarantined_and_its_clips_explained_again(
        tmp_path, video_dir, bad_inputs, capsys, table, damage_fn):
    bad_inputs["short"].rename(video_dir / "short.avi")
    args = ["--input", str(video_dir), *SMALL, "--methods", "aosa", "--clips-per-file", "1",
            "--max-failed-fraction", "1"]
    out, clean = tmp_path / "o", tmp_path / "clean"
    job.run([*args, "--output", str(out)])
    job.run([*args, "--output", str(clean)])
    victim = table_files(str(out / table))[0]
    damage_fn(victim)

    info = job.run([*args, "--output", str(out)])
    moved = info["quarantined"]
    assert victim in [m["path"] for m in moved]
    assert all(Path(m["moved_to"]).exists() and "_quarantine" in m["moved_to"] for m in moved)
    logged = capsys.readouterr().err
    assert f"quarantined {victim}" in logged
    if table != "errors":
        assert info["counts"]["clips_written"] == 1  # the damaged clip, explained again
        ids = identities(out)
        assert len(ids) == 3 and set(ids.values()) == {1}
        a, b = maps(out), maps(clean)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # Every later run reads the output normally (the damaged file is out of the way).
    again = job.run([*args, "--output", str(out)])
    assert again["quarantined"] == [] and again["counts"]["clips_skipped"] == 3


# --- one run per output ----------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_on_a_held_output_is_refused_then_may_break_the_lock(
        tmp_path, video_dir, capsys):
    out = tmp_path / "o"
    argv = ["--input", str(video_dir), "--output", str(out), *SMALL]
    holder = Lease(str(out), "20261130T000000Z-aaaaaa").acquire()  # alive: this process
    try:
        line = error_line(argv, capsys, 75)
        assert "is held by run 20261130T000000Z-aaaaaa" in line and "--break-lock" in line
        assert not (out / "metrics").exists()
        assert main([*argv, "--break-lock"], capsys)[0] == 0
    finally:
        holder.release()
    assert not (out / "_lock").exists()  # the run released its lease


@pytest.mark.parametrize("host, age, taken", [
    ("here", 1.0, True),  # a dead process on this host: taken over at once
    ("elsewhere", 1.0, False),  # another host, fresh heartbeat: refused
    ("elsewhere", 3600.0, True),  # another host, stale heartbeat: taken over
])
def test_stale_or_dead_leases_are_taken_over(tmp_path, video_dir, capsys, host, age, taken):
    out = tmp_path / "o"
    out.mkdir()
    (out / "_lock").write_text(json.dumps({
        "run_id": "old", "host": socket.gethostname() if host == "here" else "far-away",
        "pid": _dead_pid(), "started": time.time() - age, "heartbeat": time.time() - age}))
    code, err = main(["--input", str(video_dir), "--output", str(out), *SMALL], capsys)
    assert code == (0 if taken else 75), err
    if taken:
        assert any("took over the lease of run old" in line for line in err)


# --- interrupts ------------------------------------------------------------------------------


def test_sigint_and_sigterm_stop_with_one_line_and_a_rerun_resumes(tmp_path):
    videos = many_videos(tmp_path / "videos", 8)
    args = ["--input", str(videos), "--model", "tests.user_models:slow_net", "--num-frames",
            "8", "--size", "24", "--num-classes", "3", "--stride", "6", "--topk", "2",
            "--batch-size", "4", "--metric-steps", "3", "--device", "cpu",
            "--methods", "aosa,osa", "--clips-per-file", "1"]
    out = tmp_path / "o"
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        before = len(table_files(str(out / "metrics")))
        proc = subprocess.Popen([sys.executable, "run_pipeline.py", *args, "--output",
                                 str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while len(table_files(str(out / "metrics"))) < before + 2:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        lines = [line for line in err.splitlines() if line.startswith("vidxai:")]
        assert proc.returncode == code, err[-2000:]
        assert lines[-1].startswith("vidxai: interrupted: ") and lines[-1].endswith(
            "clips committed; re-run to resume"), lines
        assert len(err.splitlines()) < 15, err  # no tracebacks
        assert not (out / "_lock").exists()
        assert not [p for p in out.rglob("*") if p.name.startswith(".inprogress-")]
        assert not list(Path(tempfile.gettempdir()).glob(f"vidxai-progress-{proc.pid}-*"))
    info = job.run([*args, "--output", str(out), "--no-progress"])
    assert info["counts"]["clips_skipped"] >= 2
    ids = identities(out)
    assert len(ids) == 16 and set(ids.values()) == {1}
    clean = tmp_path / "clean"
    job.run([*args, "--output", str(clean), "--no-progress"])
    a, b = maps(out), maps(clean)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# --- a kill at each commit stage --------------------------------------------------------------

_KILLER = """
import os, signal, sys
import transforms.sink as sink
stage, sig = sys.argv[1], getattr(signal, sys.argv[2])
calls = {"n": 0}
real_atomic = sink.write_atomic
def write_atomic(path, data):
    table = "metrics" if "/metrics/" in path else "saliency" if "/saliency/" in path else "other"
    calls["n"] += table != "other"
    second_clip = calls["n"] > 2  # the first clip (2 files) commits whole
    if second_clip and stage == "before-rename" and table == "saliency":
        directory, name = path.rsplit("/", 1)
        with open(os.path.join(directory, ".inprogress-killed-" + name + ".tmp"), "wb") as fh:
            fh.write(data[: len(data) // 2])
        os.kill(os.getpid(), sig)
    real_atomic(path, data)
    if second_clip and stage == f"after-{table}":
        os.kill(os.getpid(), sig)
sink.write_atomic = write_atomic
import run_pipeline
sys.exit(run_pipeline.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("stage, sig", [
    ("before-rename", "SIGKILL"), ("after-saliency", "SIGKILL"), ("after-saliency", "SIGTERM"),
    ("before-rename", "SIGINT"),
])
def test_a_kill_at_each_commit_stage_loses_and_duplicates_nothing(tmp_path, video_dir, stage,
                                                                 sig):
    """One clip committed whole, then the process is signalled between the steps of the
    second clip's commit; the next run recovers and ends with exactly one row per identity
    and the maps of an uninterrupted run."""
    args = ["--input", str(video_dir), *SMALL, "--methods", "aosa", "--clips-per-file", "1"]
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-c", _KILLER, stage, sig, *args, "--output",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    expected = {"SIGKILL": -signal.SIGKILL, "SIGTERM": 143, "SIGINT": 130}[sig]
    assert proc.returncode == expected, proc.stderr[-3000:]
    if sig != "SIGKILL":
        assert proc.stderr.strip().splitlines()[-1].startswith("vidxai: interrupted: 1 clips")
        assert not [p for p in out.rglob("*") if p.name.startswith(".inprogress-")]
    info = job.run([*args, "--output", str(out)])
    assert info["counts"]["clips_skipped"] >= 1 and info["counts_consistent"]
    clean = tmp_path / "clean"
    job.run([*args, "--output", str(clean)])
    assert_exactly_once(out, 3, clean)
