"""End to end on FnApiRunner: real video files in, Parquet read back with pyarrow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import run_pipeline
from pipeline import job
from pipeline.outputs import iter_tables
from tests.conftest import write_manifest

SMALL = ["--model", "tiny", "--size", "24", "--num-frames", "8", "--stride", "6",
         "--topk", "2", "--batch-size", "5", "--metric-steps", "4", "--device", "cpu"]


def read_dir(path: Path):
    """The committed tables under ``path`` (Hive partitions as string columns), one per file."""
    tables = [t for _, t in iter_tables(str(path))]
    assert tables, f"no parquet files in {path}"
    return tables


def rows(path: Path) -> list[dict]:
    return [r for t in read_dir(path) for r in t.to_pylist()]


def test_directory_run_writes_maps_metrics_and_dead_letters(tmp_path, video_dir, bad_inputs):
    # Bad files sit next to the good ones; the missing path comes through a manifest below.
    for name in ("zero", "text", "truncated", "short"):
        bad_inputs[name].rename(video_dir / bad_inputs[name].name)
    out = tmp_path / "out"
    info = job.run(["--input", str(video_dir), "--output", str(out),
                             "--methods", "aosa,aosa_sgl", *SMALL, "--max-failed-fraction", "1"])
    assert info["counts"] == {"clips_in": 7, "clips_written": 3, "clips_failed": 4,
                             "clips_skipped": 0}
    assert info["counts_consistent"]

    tables = read_dir(out / "saliency")
    sal_type = tables[0].schema.field("saliency").type
    assert str(sal_type.value_type) == "halffloat" and list(sal_type.shape) == [8, 24, 24]
    sal = [r for t in tables for r in t.to_pylist()]
    assert len(sal) == 6 and {r["method"] for r in sal} == {"aosa", "aosa_sgl"}
    maps = np.concatenate([t.column("saliency").combine_chunks().to_numpy_ndarray()
                           for t in tables])
    assert maps.shape == (6, 8, 24, 24) and np.isfinite(maps).all()
    for r, m in zip(sal, maps, strict=True):
        assert r["map_shape"] == [8, 24, 24] and r["target_source"] == "predicted"
        assert r["map_max"] == pytest.approx(float(m.max()), rel=1e-2, abs=1e-4)
        assert len(r["config_hash"]) == 16

    met = rows(out / "metrics")
    assert len(met) == 6
    from transforms.metrics import auc

    for r in met:
        # Each AUC is the area of its stored curve; deletion starts and insertion ends at the
        # clean clip's probability (shared, not forwarded again: 2 × 4 metric forwards).
        assert r["deletion_auc"] == pytest.approx(auc(r["deletion_curve"]), abs=1e-6)
        assert r["insertion_auc"] == pytest.approx(auc(r["insertion_curve"]), abs=1e-6)
        assert r["deletion_curve"][0] == pytest.approx(r["target_prob"], abs=1e-6)
        assert r["insertion_curve"][-1] == pytest.approx(r["target_prob"], abs=1e-6)
        assert len(r["deletion_curve"]) == 5 and r["metric_forward_passes"] == 8
        assert r["forward_passes"] == 16 + 1  # N = (24/6)^2 masks + the base forward
        assert r["spt_rate"] is None  # no boxes given
        assert r["predicted"] == r["top5"][0]["class"]
    assert {(r["clip_id"], r["method"]) for r in met} == {(r["clip_id"], r["method"])
                                                         for r in sal}

    errors = {Path(r["video"]).name: r for r in rows(out / "errors")}
    assert set(errors) == {"zero.mp4", "text.mp4", "truncated.avi", "short.avi"}
    assert "empty" in errors["zero.mp4"]["message"]
    assert "cannot open" in errors["text.mp4"]["message"]
    assert "too few frames" in errors["short.avi"]["message"]
    assert all(e["stage"] == "decode" and e["clip_id"] for e in errors.values())

    # pandas reads the whole directory (the user guide's recipe), and joins on clip_id + method.
    import pandas as pd

    joined = pd.read_parquet(out / "metrics").merge(
        pd.read_parquet(out / "saliency", columns=["clip_id", "method", "target_class"]),
        on=["clip_id", "method"], suffixes=("", "_sal"))
    assert len(joined) == 6 and (joined.target_class == joined.target_class_sal).all()

    run = json.loads((out / "run.json").read_text())
    assert run["config_hashes"][sal[0]["method"]] == sal[0]["config_hash"]
    assert run["versions"]["apache_beam"]


def test_manifest_labels_boxes_and_bad_rows(tmp_path, video_dir, bad_inputs):
    good = sorted(video_dir.glob("*.avi"))
    boxes = [[10, 10, 30, 20]] * 12  # source pixels (48 wide, 40 high)
    manifest = write_manifest(tmp_path / "clips.jsonl", [
        {"video": str(good[0]), "label": 1, "boxes": boxes},
        {"video": str(good[1].relative_to(tmp_path)), "label": 2, "start_frame": 2},
        {"video": str(bad_inputs["missing"]), "label": 0},
        {"video": str(good[2]), "label": 0, "boxes": [[10, 10, 30, 20]] * 5},  # too few boxes
        {"video": str(good[2]), "label": 0, "start_frame": 1,
         "boxes": [[60, 60, 70, 70]] * 12},  # outside the frame
        {"label": 3},  # no video
    ])
    with open(manifest, "a") as fh:
        fh.write("{not json\n")
    out = tmp_path / "out"
    info = job.run(["--input", str(manifest), "--output", str(out),
                             "--target", "label", *SMALL, "--max-failed-fraction", "1"])
    assert info["counts"] == {"clips_in": 7, "clips_written": 2, "clips_failed": 5,
                             "clips_skipped": 0}
    met = {r["label"]: r for r in rows(out / "metrics")}
    assert set(met) == {1, 2}
    assert met[1]["target_class"] == 1 and met[1]["spt_frames"] == 8
    assert met[1]["spt_rate"] == pytest.approx(met[1]["spt_hits"] / 8)
    assert met[2]["spt_rate"] is None
    errs = rows(out / "errors")
    messages = " | ".join(f"{e['stage']}:{e['message']}" for e in errs)
    assert "does not exist" in messages
    assert "boxes but the clip uses video frames" in messages
    assert "entirely outside" in messages
    assert "no 'video'" in messages and "unreadable row" in messages

    # Pictures of the run: 5 frames, enlarged ×6 (24 px), a title band, boxes drawn in green.
    import cv2

    from pipeline.apps.visualize import render_run

    pngs = render_run(str(out), str(tmp_path / "fig"), manifest=str(manifest))
    assert len(pngs) == 2
    images = {Path(p).name: cv2.imread(p)[..., ::-1] for p in pngs}
    assert all(im.shape == (22 + 2 * 144, 5 * 144, 3) for im in images.values())
    green = {n: int(((im[..., 1] == 255) & (im[..., 0] == 0)).sum()) for n, im in images.items()}
    boxed = [n for n in green if n.startswith(good[0].stem)]
    assert green[boxed[0]] > 100 and all(v == 0 for n, v in green.items() if n not in boxed)


def test_rerun_replaces_outputs_and_is_idempotent(tmp_path, video_dir):
    out = tmp_path / "out"
    args = ["--input", str(video_dir), "--output", str(out), *SMALL]
    job.run(args)
    first = sorted((r["clip_id"], r["method"]) for r in rows(out / "saliency"))
    first_maps = {r["clip_id"]: r["saliency"] for r in rows(out / "saliency")}
    job.run(args)
    second = rows(out / "saliency")
    assert sorted((r["clip_id"], r["method"]) for r in second) == first
    for r in second:
        np.testing.assert_array_equal(r["saliency"], first_maps[r["clip_id"]])


@pytest.mark.parametrize("args,message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--methods", "aosa,magic"], "unknown method 'magic'"),
    (["--stride", "0"], "--stride must be"),
    (["--topk", "5000"], "--topk must be in"),
    (["--batch-size", "0"], "--batch-size must be"),
    (["--num-frames", "1"], "--num-frames must be"),
    (["--target", "17"], "out of range"),
    (["--device", "cuda"], "no CUDA device"),
    (["--precision", "fp8"], "--precision must be"),
    (["--checkpoint", "/nonexistent.pt"], "does not exist"),
])
def test_invalid_options_fail_fast_with_one_line(tmp_path, video_dir, capsys, args, message):
    code = run_pipeline.main(["--input", str(video_dir), "--output", str(tmp_path / "o"),
                              "--model", "tiny", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("vidxai: error:") and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_input_naming_nothing_fails_fast(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_pipeline.main(["--input", str(empty), "--output", str(tmp_path / "o")]) == 2
    assert "names no video files" in capsys.readouterr().err


def test_workers_in_separate_processes_give_the_same_maps(tmp_path, video_dir):
    """SDK workers in other processes (the Fn API remote engines use): DoFns pickle, each worker
    loads its own network, and the maps equal the in-process run's."""
    args = ["--input", str(video_dir), *SMALL, "--no-metrics"]
    job.run([*args, "--output", str(tmp_path / "a")])
    info = job.run([*args, "--output", str(tmp_path / "b"),
                             "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert info["counts"] == {"clips_in": 3, "clips_written": 3, "clips_failed": 0,
                             "clips_skipped": 0}
    a = {r["clip_id"]: r["saliency"] for r in rows(tmp_path / "a" / "saliency")}
    b = {r["clip_id"]: r["saliency"] for r in rows(tmp_path / "b" / "saliency")}
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # --no-metrics: the metrics table still records each method's cost, metric columns null.
    costs = rows(tmp_path / "b" / "metrics")
    assert len(costs) == 3 and all(r["forward_passes"] == 17 for r in costs)
    assert all(r["deletion_auc"] is None and r["metric_forward_passes"] is None for r in costs)


def test_portable_runner_with_an_external_worker_pool(tmp_path, video_dir):
    """The portable (Fn API) runner that Flink, Spark and Dataflow use, with SDK workers started
    by a worker pool in another process: the same maps as the local run."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)  # the pool starts workers as `python`: make it this interpreter's
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    pool = subprocess.Popen([sys.executable, "-m",
                             "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        args = ["--input", str(video_dir), *SMALL, "--no-metrics"]
        info = job.run([*args, "--output", str(tmp_path / "p"),
                                 "--runner=PortableRunner", "--job_endpoint=embed",
                                 "--environment_type=EXTERNAL",
                                 f"--environment_config=localhost:{port}"])
    finally:
        pool.terminate()
        pool.wait(timeout=30)
    assert info["runner"] == "PortableRunner"
    assert info["counts"] == {"clips_in": 3, "clips_written": 3, "clips_failed": 0,
                             "clips_skipped": 0}
    job.run([*args, "--output", str(tmp_path / "l")])
    local = {r["clip_id"]: r["saliency"] for r in rows(tmp_path / "l" / "saliency")}
    for r in rows(tmp_path / "p" / "saliency"):
        np.testing.assert_array_equal(r["saliency"], local[r["clip_id"]])


def test_picture_scales():
    from pipeline.apps.visualize import normalise_map

    sal = np.array([[[-2.0, 0.0], [1.0, 2.0]]])
    np.testing.assert_allclose(normalise_map(sal), [[[0.0, 0.5], [0.75, 1.0]]])
    np.testing.assert_allclose(normalise_map(sal, "positive"), [[[0.0, 0.0], [0.5, 1.0]]])
    assert not normalise_map(np.full((1, 2, 2), 3.0)).any()  # no signal: drawn as 0
    assert not normalise_map(-np.ones((1, 2, 2)), "positive").any()
    with pytest.raises(ValueError, match="unknown scale"):
        normalise_map(sal, "log")
