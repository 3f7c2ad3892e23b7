"""The job on Apache Flink: Beam's Flink job server (embedded mini-cluster, parallelism 2) with
SDK workers from a worker pool in other processes, through ``run_pipeline.py``'s Beam flags.

The job-server jar comes from Maven Central through :mod:`pipeline.apps.flink` (cached after the
first fetch, about 150 MB); when it cannot be had the test fails with the reason.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import run_pipeline
from pipeline import job
from pipeline.apps import flink
from pipeline.outputs import iter_tables

SMALL = ["--model", "tiny", "--size", "24", "--num-frames", "8", "--stride", "6",
         "--topk", "2", "--batch-size", "5", "--metric-steps", "4", "--device", "cpu",
         "--no-progress"]


@pytest.fixture(scope="module")
def job_server_jar() -> Path:
    try:
        return flink.job_server_jar()
    except flink.JobServerUnavailable as exc:
        pytest.fail(f"Beam's Flink job server is needed for this test: {exc}")


def children(marker: str) -> list[int]:
    """Live (not zombie) child processes of this one whose command line contains ``marker``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, ...
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and marker in cmd:
            found.append(int(d.name))
    return found


def rows(path: Path) -> list[dict]:
    return [r for _, t in iter_tables(str(path)) for r in t.to_pylist()]


def maps(out: Path) -> dict[tuple[str, str], np.ndarray]:
    return {(r["clip_id"], r["method"]): np.asarray(r["saliency"])
            for r in rows(out / "saliency")}


def test_flink_run_counts_maps_dead_letters_and_incremental_skip(tmp_path, video_dir,
                                                                  job_server_jar, caplog):
    (video_dir / "zero.mp4").write_bytes(b"")  # the bad clip: an empty file
    out, local = tmp_path / "flink", tmp_path / "local"
    jvm_tmp = tmp_path / "jvm-tmp"
    jvm_tmp.mkdir()
    args = ["--input", str(video_dir), *SMALL, "--methods", "aosa,aosa_sgl",
            "--max-failed-fraction", "1"]  # 1 of 4 clips is bad on purpose
    caplog.set_level(logging.INFO, logger="FlinkJarJobServer")  # the job server's own log
    with flink.worker_pool() as pool:
        flink_args = [*args, "--output", str(out), "--runner", "FlinkRunner",
                      "--flink_master", "[local]", "--flink_version", flink.FLINK_VERSION,
                      "--flink_job_server_jar", str(job_server_jar), "--parallelism", "2",
                      "--environment_type", "EXTERNAL", "--environment_config", pool.endpoint,
                      # Beam stops the job server with SIGINT, then SIGKILL after 5 s: Flink's
                      # flink-rpc-akka*.jar (22 MB) stays in the JVM's temp dir. Keep it here.
                      f"--job_server_jvm_properties=-Djava.io.tmpdir={jvm_tmp}"]
        try:
            assert run_pipeline.main(flink_args) == 0
            first = json.loads((out / "run.json").read_text())
            first_maps = sorted(out.glob("saliency/**/*.parquet"))
            # Incremental: the same job again on the same output explains nothing new.
            assert run_pipeline.main(flink_args) == 0
            second = json.loads((out / "run.json").read_text())
        finally:
            # The job server JVM (started by Beam from the jar) is gone after each run.
            leftover = children(job_server_jar.name)
        pool_process = pool.process
    assert not leftover, f"job server processes left running: {leftover}"
    assert pool_process.poll() is not None and not children("pipeline.apps.flink pool")
    with pytest.raises(ProcessLookupError):  # nor any SDK worker the pool started
        os.killpg(pool_process.pid, 0)

    assert first["runner"] == "FlinkRunner"
    assert first["counts"] == {"clips_in": 4, "clips_written": 3, "clips_failed": 1,
                               "clips_skipped": 0} and first["counts_consistent"]
    assert first["counters"]["clips_in"] == 4  # Beam's counters, read back from Flink
    assert first["counters"]["explain_ok"] == 3
    # Flink ran the explain stage as two parallel subtasks.
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "(1/2)" in log and "(2/2)" in log, "no trace of two Flink subtasks in the log"

    errors = rows(out / "errors")
    assert [Path(e["video"]).name for e in errors] == ["zero.mp4"] * 2  # one per run
    assert {e["stage"] for e in errors} == {"decode"} and "empty" in errors[0]["message"]

    assert second["counts"] == {"clips_in": 4, "clips_written": 0, "clips_failed": 1,
                                "clips_skipped": 3} and second["counts_consistent"]
    assert second["counters"].get("explain_ok", 0) == 0
    assert sorted(out.glob("saliency/**/*.parquet")) == first_maps  # no map file added

    # The same clips on the local FnApiRunner: bit-equal maps and equal metrics (the same code
    # on the same CPU; which runner or process calls it changes no arithmetic).
    job.run([*args, "--output", str(local)])
    flink_maps, local_maps = maps(out), maps(local)
    assert flink_maps.keys() == local_maps.keys() and len(flink_maps) == 6
    for key, m in flink_maps.items():
        np.testing.assert_array_equal(m, local_maps[key], err_msg=str(key))
    met = {(r["clip_id"], r["method"]): (r["deletion_auc"], r["insertion_auc"], r["target_prob"])
           for r in rows(out / "metrics")}
    assert met == {(r["clip_id"], r["method"]): (r["deletion_auc"], r["insertion_auc"],
                                                 r["target_prob"])
                   for r in rows(local / "metrics")}


@pytest.mark.parametrize("options,local", [
    (["--runner", "FlinkRunner", "--flink_master", "[local]"], True),  # Beam picks LOOPBACK
    (["--runner", "FlinkRunner"], True),  # Beam's default master: [auto], a local mini-cluster
    (["--runner", "FlinkRunner", "--flink_master", "[local]", "--environment_type", "EXTERNAL",
      "--environment_config", "127.0.0.1:50000"], True),
    (["--runner", "FlinkRunner", "--flink_master", "flink-master:8081"], False),
    (["--runner", "FlinkRunner", "--flink_master", "flink-master:8081",
      "--environment_type", "PROCESS"], False),
    (["--runner", "FlinkRunner", "--flink_master", "[local]", "--environment_type", "DOCKER"],
     False),
    (["--runner", "PortableRunner", "--job_endpoint", "flink:8099", "--environment_type",
      "EXTERNAL", "--environment_config", "worker-pool:50000"], False),
])
def test_where_flink_workers_run(options, local):
    """Local workers get the progress line and the device check here; remote ones do not."""
    from apache_beam.options.pipeline_options import PipelineOptions

    assert job.runs_locally(PipelineOptions(options)) is local


def test_manifest_lines_are_wrapped_and_name_every_jar():
    names = [f"lib/dependency-number-{i}-with-a-long-name-1.2.3.jar" for i in range(40)]
    raw = flink.manifest("org.example.Main", names)
    lines = raw.split(b"\r\n")
    assert all(len(ln) <= 72 for ln in lines)
    text = raw.decode().replace("\r\n ", "")
    cp = next(ln for ln in text.split("\r\n") if ln.startswith("Class-Path:"))
    assert cp.split()[1:] == names
    assert "Main-Class: org.example.Main" in text.split("\r\n")
