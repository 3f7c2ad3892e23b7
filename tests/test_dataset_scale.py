"""Dataset-scale operation: incremental runs, exactly-once after SIGKILL, coexisting configs,
long videos as many clips, bounded files and compact maps, Beam counters in run.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import job
from pipeline.outputs import iter_tables, read_table, summary_table, table_files
from pipeline.state import recover
from tests.conftest import write_video
from tests.test_tubes import translating_clip
from transforms.decode import decode_clip, video_frame_count
from transforms.encoding import decode_map, encode_map, pool_map
from transforms.io import ClipSampling, clip_starts
from transforms.sink import OutputPaths

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model", "tiny", "--size", "24", "--num-frames", "8", "--stride", "6",
         "--topk", "2", "--batch-size", "5", "--metric-steps", "4", "--device", "cpu",
         "--no-progress"]


IDENTITY = ["clip_id", "model", "method", "config_hash", "weights_sha256"]


def identities(out: Path, table: str = "metrics") -> Counter:
    """(clip_id, model, method, config_hash, weights_sha256) → rows."""
    t = read_table(str(out / table), IDENTITY)
    if t is None:
        return Counter()
    return Counter(zip(*(t.column(c).to_pylist() for c in IDENTITY), strict=True))


def maps(out: Path) -> dict[tuple, np.ndarray]:
    t = read_table(str(out / "saliency"), ["clip_id", "method", "config_hash", "saliency"])
    arr = t.column("saliency").combine_chunks().to_numpy_ndarray()
    keys = zip(*(t.column(c).to_pylist() for c in ("clip_id", "method", "config_hash")),
               strict=True)
    return dict(zip(keys, arr, strict=True))


def many_videos(d: Path, n: int, start: int = 0) -> Path:
    d.mkdir(exist_ok=True)
    for i in range(start, start + n):
        clip = translating_clip(1 + i % 3, (i % 2) - 1, frames=10, size=32, seed=i)
        write_video(d / f"v{i:02d}.avi", clip)
    return d


# --- exactly-once after SIGKILL ----------------------------------------------------------------


def kill_when(proc, committed, count: int, seconds: float = 240) -> None:
    """SIGKILL ``proc``'s session once ``committed()`` reaches ``count`` (no cleanup runs)."""
    deadline = time.monotonic() + seconds
    try:
        while committed() < count:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, f"no clip was committed in {seconds} s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def assert_exactly_once(out: Path, identities_per_table: int, clean: Path) -> None:
    """One row per identity in both tables, nothing in flight left, and the maps of ``clean``
    (an uninterrupted run of the same clips)."""
    for table in ("metrics", "saliency"):
        ids = identities(out, table)
        assert len(ids) == identities_per_table and set(ids.values()) == {1}, table
    assert not [p for p in out.rglob("*") if p.name.startswith(".inprogress-")]
    a, b = maps(out), maps(clean)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_sigkill_part_way_then_rerun_gives_one_row_per_identity_and_equal_maps(tmp_path):
    videos = many_videos(tmp_path / "videos", 10)
    args = ["--input", str(videos), "--model", "tests.user_models:slow_net", "--num-frames",
            "8", "--size", "24", "--num-classes", "3", "--stride", "6", "--topk", "2",
            "--batch-size", "4", "--metric-steps", "3", "--device", "cpu", "--no-progress",
            "--methods", "aosa,osa", "--clips-per-file", "1"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", *args, "--output", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    kill_when(proc, lambda: len(table_files(str(out / "metrics"))), 4)  # 2 clips × 2 methods
    committed = identities(out)
    assert 2 <= len({c for c, *_ in committed}) < 10  # killed part-way
    assert not (out / "run.json").exists()

    info = job.run([*args, "--output", str(out)])
    c = info["counts"]
    assert c["clips_in"] == 10 and c["clips_failed"] == 0 and info["counts_consistent"]
    assert c["clips_skipped"] >= 2 and c["clips_written"] == 10 - c["clips_skipped"]
    assert info["duplicate_rows"] == 0
    # The interrupted-and-resumed output holds the same maps as one uninterrupted run.
    clean = tmp_path / "clean"
    job.run([*args, "--output", str(clean)])
    assert_exactly_once(out, 20, clean)


def test_recovery_removes_temporaries_orphan_maps_and_duplicate_commits(tmp_path, video_dir):
    out = tmp_path / "o"
    job.run(["--input", str(video_dir), "--output", str(out), *SMALL, "--clips-per-file", "1"])
    sal = sorted((out / "saliency").rglob("part-*.parquet"))
    met = sorted((out / "metrics").rglob("part-*.parquet"))
    assert len(sal) == len(met) == 3
    # A crash between the saliency and the metrics renames: an orphan map, a temporary.
    (met[0].parent / met[0].name).rename(met[0].parent / ".inprogress-x-part.parquet.tmp")
    # A retried bundle that committed a clip again under another name: a duplicate.
    twin = met[1].read_bytes()
    (met[1].parent / "part-ffffffffffffffff.parquet").write_bytes(twin)
    (sal[1].parent / "part-ffffffffffffffff.parquet").write_bytes(sal[1].read_bytes())
    before = identities(out)
    assert sum(before.values()) == 3 and max(before.values()) == 2
    removed = recover(OutputPaths(str(out)))
    assert removed == {"temporaries_removed": 1, "orphan_files_removed": 1,
                       "duplicate_files_removed": 1}
    after = identities(out)
    assert len(after) == 2 and set(after.values()) == {1}
    assert identities(out, "saliency") == after
    info = job.run(["--input", str(video_dir), "--output", str(out), *SMALL])
    assert info["counts"]["clips_written"] == 1 and info["counts"]["clips_skipped"] == 2
    assert set(identities(out).values()) == {1} and len(identities(out)) == 3


# --- incremental runs -------------------------------------------------------------------------


def test_a_grown_input_explains_only_the_new_clips(tmp_path):
    videos = many_videos(tmp_path / "videos", 3)
    out = tmp_path / "o"
    first = job.run(["--input", str(videos), "--output", str(out), *SMALL])
    assert first["counts"] == {"clips_in": 3, "clips_written": 3, "clips_failed": 0,
                               "clips_skipped": 0}
    files_before = {p: p.stat().st_mtime_ns for p in out.rglob("part-*.parquet")}
    many_videos(videos, 2, start=3)
    second = job.run(["--input", str(videos), "--output", str(out), *SMALL])
    assert second["counts"] == {"clips_in": 5, "clips_written": 2, "clips_failed": 0,
                                "clips_skipped": 3}
    assert second["counters"]["explain_ok"] == 2 and second["counters"]["decode_ok"] == 2
    # Nothing already committed was rewritten; the new rows say which run wrote them.
    assert all(p.stat().st_mtime_ns == t for p, t in files_before.items())
    rows = read_table(str(out / "metrics"), ["video", "run_id"]).to_pylist()
    by_run = Counter(r["run_id"] for r in rows)
    assert by_run == {first["run_id"]: 3, second["run_id"]: 2}
    assert set(identities(out).values()) == {1}
    # A third run has nothing to do; the run history keeps every run.
    third = job.run(["--input", str(videos), "--output", str(out), *SMALL])
    assert third["counts"]["clips_skipped"] == 5 and "explain_ok" not in third["counters"]
    history = sorted(p.stem for p in (out / "runs").glob("*.json"))
    assert history == sorted([first["run_id"], second["run_id"], third["run_id"]])
    assert json.loads((out / "run.json").read_text())["run_id"] == third["run_id"]


def test_a_new_config_coexists_and_a_new_method_reuses_the_others(tmp_path, video_dir):
    out = tmp_path / "o"
    a = job.run(["--input", str(video_dir), "--output", str(out), *SMALL])
    changed = [*SMALL[:6], "--stride", "8", *SMALL[8:]]
    b = job.run(["--input", str(video_dir), "--output", str(out), *changed])
    assert b["counts"]["clips_written"] == 3 and b["counts"]["clips_skipped"] == 0
    ha, hb = a["config_hashes"]["aosa"], b["config_hashes"]["aosa"]
    assert ha != hb
    ids = identities(out)
    assert Counter(h for _, _, _, h, _ in ids) == {ha: 3, hb: 3}
    sal = maps(out)
    assert any(not np.array_equal(sal[(c, "aosa", ha)], sal[(c, "aosa", hb)])
               for c in {c for c, *_ in ids})
    # Adding a method: only the new one is computed; aosa's rows are the first run's.
    c = job.run(["--input", str(video_dir), "--output", str(out), *SMALL,
                 "--methods", "aosa,center"])
    assert c["config_hashes"]["aosa"] == ha and c["counts"]["clips_written"] == 3
    rows = read_table(str(out / "metrics"), ["method", "run_id", "config_hash"]).to_pylist()
    assert Counter((r["method"], r["run_id"]) for r in rows if r["config_hash"] != hb) == {
        ("aosa", a["run_id"]): 3, ("center", c["run_id"]): 3}
    # --recompute replaces this configuration's rows only.
    d = job.run(["--input", str(video_dir), "--output", str(out), *SMALL, "--recompute"])
    rows = read_table(str(out / "metrics"), ["method", "run_id", "config_hash"]).to_pylist()
    assert Counter((r["method"], r["run_id"]) for r in rows) == {
        ("aosa", d["run_id"]): 3, ("center", c["run_id"]): 3, ("aosa", b["run_id"]): 3}
    assert set(identities(out).values()) == {1}


def test_partitions_prune_by_model_and_method_in_pyarrow_and_duckdb(tmp_path, video_dir):
    out = tmp_path / "o"
    job.run(["--input", str(video_dir), "--output", str(out), *SMALL,
             "--methods", "aosa,center"])
    assert sorted(p.name for p in (out / "metrics" / "model=tiny").iterdir()) == [
        "method=aosa", "method=center"]
    t = pq.read_table(out / "metrics", filters=[("method", "=", "center")])
    assert t.num_rows == 3 and set(t.column("model").to_pylist()) == {"tiny"}
    duckdb = pytest.importorskip("duckdb", reason="duckdb is a test extra (setup.py)")
    con = duckdb.connect()
    got = con.execute(
        "SELECT method, count(*) FROM read_parquet(?, hive_partitioning = true) "
        "WHERE model = 'tiny' GROUP BY method ORDER BY method",
        [str(out / "metrics" / "**" / "*.parquet")]).fetchall()
    assert got == [("aosa", 3), ("center", 3)]


def test_files_are_bounded_by_clips_per_file(tmp_path):
    videos = many_videos(tmp_path / "videos", 5)
    out = tmp_path / "o"
    job.run(["--input", str(videos), "--output", str(out), *SMALL, "--clips-per-file", "2"])
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in (out / "metrics").rglob("*.parquet")]
    assert sum(sizes) == 5 and max(sizes) <= 2


# --- long videos ------------------------------------------------------------------------------


def long_video(path: Path, frames: int, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A video whose frame t has brightness 2t mod 256 and a bar at x = t mod 30."""
    h, w = size
    video = np.zeros((frames, h, w, 3), np.uint8)
    for t in range(frames):
        video[t] = (2 * t) % 256
        video[t, 5:15, t % 30:t % 30 + 10] = 255
    write_video(path, video)
    return video


def test_clip_starts_known_answers():
    s = ClipSampling(num_frames=8, frame_stride=2)  # a clip spans 15 video frames
    assert clip_starts(100, ClipSampling(8, 2, clip_hop=30)) == [0, 30, 60]
    assert clip_starts(100, ClipSampling(8, 2, clips_per_video=3)) == [0, 42, 85]
    assert clip_starts(15, ClipSampling(8, 2, clips_per_video=1)) == [0]
    assert clip_starts(100, ClipSampling(8, 2, clips_per_video=1)) == [42]
    assert clip_starts(16, ClipSampling(8, 2, clips_per_video=5)) == [0, 1]  # only 2 fit
    with pytest.raises(ValueError, match="a clip needs 15 video frames"):
        clip_starts(14, s)


def test_seeking_decodes_the_same_frames_as_reading_from_the_start(tmp_path):
    path = tmp_path / "long.avi"
    long_video(path, 120)
    assert video_frame_count(str(path)) == 120
    for start in (0, 37, 100, 112):
        sought = decode_clip(str(path), start, 8, 32)
        read = decode_clip(str(path), start, 8, 32, seek_to_start=False)
        assert sought.frame_indices == tuple(range(start, start + 8))
        np.testing.assert_array_equal(sought.frames, read.frames)


def test_decoding_a_clip_of_a_long_video_holds_one_clip_of_frames(tmp_path):
    path = tmp_path / "long.avi"
    long_video(path, 600, size=(120, 160))
    whole = 600 * 120 * 160 * 3  # 34.6 MB if the video were held
    tracemalloc.start()
    try:
        for start in (0, 300, 590):
            tracemalloc.reset_peak()
            clip = decode_clip(str(path), start, 8, 32, frame_stride=1)
            peak = tracemalloc.get_traced_memory()[1]
            # 8 crops of 32×32 plus a couple of source frames in flight (57.6 kB each).
            assert peak < 4 * 120 * 160 * 3 + clip.frames.nbytes, (start, peak)
    finally:
        tracemalloc.stop()
    assert peak < whole / 100


def test_a_long_video_becomes_many_clips_and_a_corrupt_stretch_fails_only_its_clips(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    long_video(d / "long.avi", 120)
    data = bytearray((d / "long.avi").read_bytes())
    jpeg = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(jpeg) == 120
    data[jpeg[60] + 2:jpeg[60] + 400] = bytes(398)  # frame 60 is no JPEG any more
    (d / "broken.avi").write_bytes(bytes(data))
    out = tmp_path / "o"
    info = job.run(["--input", str(d), "--output", str(out), *SMALL, "--clip-hop", "16",
                    "--methods", "center"])
    # 120 frames, 8-frame clips every 16 frames: starts 0, 16, ..., 112 → 8 clips per video.
    c = info["counts"]
    assert c["clips_in"] == 16 and info["counts_consistent"]
    met = read_table(str(out / "metrics"), ["video", "start_frame", "clip_id"]).to_pylist()
    starts = {(Path(r["video"]).name, r["start_frame"]) for r in met}
    assert {s for v, s in starts if v == "long.avi"} == set(range(0, 113, 16))
    assert len({r["clip_id"] for r in met}) == len(met)
    broken_ok = {s for v, s in starts if v == "broken.avi"}
    errors = read_table(str(out / "errors"), ["video", "start_frame", "message"]).to_pylist()
    failed = {r["start_frame"] for r in errors}
    assert broken_ok | failed == set(range(0, 113, 16)) and not broken_ok & failed
    assert 48 in failed or 64 in failed  # the clips around frame 60 failed ...
    assert {0, 16, 96, 112} <= broken_ok  # ... the far ones did not
    assert all("broken.avi" in r["video"] for r in errors)


# --- compact maps -----------------------------------------------------------------------------


def test_encodings_known_answers_and_error_bounds():
    rng = np.random.default_rng(0)
    sal = rng.normal(size=(4, 8, 8)).astype(np.float32)
    lo, hi = float(sal.min()), float(sal.max())
    q = encode_map(sal, "uint8", lo, hi)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    back = decode_map(q, "uint8", lo, hi)
    assert np.abs(back - sal).max() <= (hi - lo) / 510 + 1e-6
    const = np.full((2, 4, 4), 0.3, np.float32)
    np.testing.assert_array_equal(decode_map(encode_map(const, "uint8", 0.3, 0.3), "uint8",
                                             0.3, 0.3), const)
    pooled = pool_map(np.arange(16, dtype=np.float32).reshape(1, 4, 4), (1, 2))
    np.testing.assert_array_equal(pooled, [[[2.5, 4.5], [10.5, 12.5]]])
    up = decode_map(pooled, "float32", 0, 0, (1, 2), upsample=True)
    assert up.shape == (1, 4, 4) and up[0, 1, 1] == 2.5 and up[0, 3, 3] == 12.5
    with pytest.raises(ValueError, match="does not divide"):
        pool_map(sal, (3, 1))


def test_uint8_pooled_maps_in_the_pipeline_match_the_float_maps(tmp_path, video_dir):
    full, small = tmp_path / "f", tmp_path / "s"
    job.run(["--input", str(video_dir), "--output", str(full), *SMALL,
             "--saliency-dtype", "float32"])
    job.run(["--input", str(video_dir), "--output", str(small), *SMALL,
             "--saliency-dtype", "uint8", "--saliency-pool", "2,4"])
    t = read_table(str(small / "saliency"))
    typ = t.schema.field("saliency").type
    assert str(typ.value_type) == "uint8" and list(typ.shape) == [4, 6, 6]
    ref = {k[0]: v for k, v in maps(full).items()}
    for r, stored in zip(t.to_pylist(), t.column("saliency").combine_chunks()
                         .to_numpy_ndarray(), strict=True):
        assert r["encoding"] == "uint8" and r["pool"] == [2, 4] and r["map_shape"] == [4, 6, 6]
        got = decode_map(stored, "uint8", r["map_min"], r["map_max"], (2, 4))
        want = pool_map(ref[r["clip_id"]], (2, 4))
        assert np.abs(got - want).max() <= (r["map_max"] - r["map_min"]) / 510 + 1e-6
    with pytest.raises(ValueError, match="does not divide"):
        job.run(["--input", str(video_dir), "--output", str(small), *SMALL,
                 "--saliency-pool", "3,4"])


# --- accounting and runners -------------------------------------------------------------------


def test_run_json_holds_beam_counters_for_every_stage(tmp_path, video_dir, bad_inputs):
    bad_inputs["short"].rename(video_dir / "short.avi")
    info = job.run(["--input", str(video_dir), "--output", str(tmp_path / "o"), *SMALL,
                    "--methods", "aosa,aosa_sgl", "--max-failed-fraction", "1"])
    k = info["counters"]
    assert k["clips_in"] == 4 and k["clips_failed"] == 1
    assert k["decode_ok"] == 3 and k["flow_ok"] == 3 and k["tubes_ok"] == 3
    assert k["explain_ok"] == 3 and k["clips_written"] == 3
    met = read_table(str(tmp_path / "o" / "metrics"),
                     ["forward_passes", "metric_forward_passes"]).to_pylist()
    assert k["forward_passes"] == sum(r["forward_passes"] + r["metric_forward_passes"]
                                      for r in met)
    assert all(k[f"{s}_ms"] >= 0 for s in ("decode", "flow", "tubes", "explain"))


def test_dask_runner_is_refused_with_the_reason(tmp_path, video_dir):
    with pytest.raises(ValueError, match="DaskRunner is not supported.*drops outputs"):
        job.run(["--input", str(video_dir), "--output", str(tmp_path / "o"), *SMALL,
                 "--runner", "DaskRunner"])


def test_iter_tables_reads_partitions_and_skips_files_in_flight(tmp_path, video_dir):
    out = tmp_path / "o"
    job.run(["--input", str(video_dir), "--output", str(out), *SMALL])
    part = next((out / "metrics").rglob("part-*.parquet"))
    (part.parent / ".inprogress-abc-part-1.parquet.tmp").write_bytes(b"half a file")
    tables = list(iter_tables(str(out / "metrics"), ["clip_id", "model", "method"],
                              where={"method": "aosa"}))
    assert len(tables) == 1 and tables[0][1].column_names == ["clip_id", "model", "method"]
    assert list(iter_tables(str(out / "metrics"), where={"method": "osa"})) == []
    assert table_files(str(tmp_path / "nothing")) == []


def test_maps_that_come_with_a_warning_are_counted_and_summarised(tmp_path, video_dir):
    """``ep`` stopped after 2 steps (its masks still cover nearly the clip, not their areas):
    every clip's map is written, each with one warning, counted in run.json and named in the
    end-of-run summary; the converged ``center`` map has none."""
    out = tmp_path / "o"
    info = job.run(["--input", str(video_dir), "--output", str(out), *SMALL,
                    "--methods", "ep,center", "--ep-iterations", "2"])
    written = info["counts"]["clips_written"]
    assert written == 3 and info["counters"]["method_warnings"] == written
    text = summary_table(OutputPaths(str(out)), info)
    assert f"{written} map(s) came with a method's warning" in text
    quiet = job.run(["--input", str(video_dir), "--output", str(tmp_path / "q"), *SMALL,
                     "--methods", "center"])
    assert "method_warnings" not in quiet["counters"]
    assert "warning" not in summary_table(OutputPaths(str(tmp_path / "q")), quiet)
