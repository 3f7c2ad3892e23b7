"""The job: options → validated configuration → Beam pipeline → outputs, counts, ``run.json``.

``run(argv)`` is the one entry point (the command line, the demo, the evaluation and the tests
call it). Before any work it rejects unknown flags, resolves and validates every option, builds
the network once on the driver's CPU to check its weights (their SHA-256 enters the config
hash), and lists the input; then it runs the pipeline, reads the counts back from the written
tables and writes ``run.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from pipeline.build import build_pipeline, sampling
from pipeline.config import RunConfig
from pipeline.options import config_from_options, with_default_runner
from pipeline.outputs import counts_from_outputs, now, versions, write_run_json
from pipeline.progress import ProgressMonitor
from pipeline.state import delete_configuration, done_methods, duplicate_identities, recover
from pipeline.strict_args import check_known_args
from transforms.io import list_clips, missing_methods
from transforms.progress import record_progress
from transforms.records import ClipRef
from transforms.scoring import resolve_device
from transforms.sink import OutputPaths

# Runners whose workers run on this machine (so the device can be checked here, and workers
# can report progress through a local directory).
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner",
                 "BundleBasedDirectRunner")


class RunFailed(RuntimeError):
    """The run finished but failed a check (``--max-failed-fraction``, clip accounting).

    Attributes:
        info: the run record (also written to ``run.json``).
    """

    def __init__(self, message: str, info: dict) -> None:
        super().__init__(message)
        self.info = info


def runs_locally(options: PipelineOptions) -> bool:
    """True when the SDK workers are processes of this machine.

    Local runners; a portable runner (``PortableRunner``, ``FlinkRunner``) whose workers are
    LOOPBACK or an EXTERNAL pool on localhost; ``FlinkRunner`` on Flink's embedded mini-cluster
    (``--flink_master [local]``/``[auto]``, Beam's default) with PROCESS workers or none named
    (Beam then picks LOOPBACK).
    """
    runner = str(options.view_as(StandardOptions).runner or "")
    runner = runner.rsplit(".", 1)[-1]
    if runner in LOCAL_RUNNERS:
        return True
    portable = options.view_as(PortableOptions)
    env, where = str(portable.environment_type or "").upper(), str(portable.environment_config
                                                                  or "")
    mini_cluster = (runner == "FlinkRunner" and str(
        options.view_as(FlinkRunnerOptions).flink_master).strip() in ("[local]", "[auto]"))
    return runner in ("PortableRunner", "FlinkRunner") and (
        env == "LOOPBACK"
        or (env == "EXTERNAL" and where.split(":")[0] in ("localhost", "127.0.0.1"))
        or (mini_cluster and env in ("", "PROCESS")))


def stop_job_servers_after(runner: object) -> Callable[[], None]:
    """Record the job servers ``runner`` starts itself; the returned function stops them.

    ``FlinkRunner`` without ``--job_endpoint`` starts Beam's Flink job-server JVM and leaves it
    to an ``atexit`` hook, which ``run_pipeline.py`` skips (it leaves with ``os._exit``): the
    JVM would outlive the run. Call the function once the job's metrics are read.
    """
    default = getattr(runner, "default_job_server", None)
    if default is None:
        return lambda: None
    started = []

    def recording(options: PipelineOptions) -> object:
        started.append(default(options))
        return started[-1]

    runner.default_job_server = recording  # on this runner object only

    def stop() -> None:
        for server in started:
            server.stop()
        del runner.default_job_server

    return stop


UNSUPPORTED_RUNNERS = {
    "DaskRunner": "Beam 2.77's DaskRunner drops outputs (outputs emitted in finish_bundle are "
                  "lost, only the last branch is evaluated): use FnApiRunner here, or a "
                  "cluster runner (README: Beyond one machine)",
}


def prepare(argv: list[str]) -> tuple[PipelineOptions, RunConfig, list[str] | None, list]:
    """Everything that can fail before the pipeline starts, with one-line ValueErrors.

    Returns:
        (options, configuration with ``weights_sha256``, class names, the clip list: ClipRef
        and ErrorRecord items, as the pipeline will list them).
    """
    check_known_args(argv)
    options = with_default_runner(PipelineOptions(argv))
    runner = str(options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1]
    if runner in UNSUPPORTED_RUNNERS:
        raise ValueError(f"--runner {runner} is not supported: {UNSUPPORTED_RUNNERS[runner]}")
    cfg = config_from_options(options)
    if runs_locally(options):
        resolve_device(cfg.device)  # the workers are this machine: a missing GPU fails now
    handler = cfg.handler()
    cfg = dataclasses.replace(cfg, weights_sha256=handler.validate())
    names = handler.class_names()
    cfg.fixed_target(names)
    s = sampling(cfg)
    items = list(list_clips(cfg.input, s.num_frames, s.frame_stride, names, s.clips_per_video,
                            s.clip_hop))
    return options, cfg, names, items


def new_run_id() -> str:
    """``20261124T151640Z-3fa9c1``: sortable by start time, unique."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Run the job; returns the content of ``run.json``.

    Incremental: clips whose every requested method ``--output`` already holds for this
    configuration (weights and each method's config hash) are skipped; ``--recompute``
    removes this configuration's rows first. Rows of other models and configurations stay.

    Raises:
        ValueError: a bad option or input (before any work).
        RunFailed: more than ``--max-failed-fraction`` of the clips failed, or the counts do
            not add up (after the outputs and run.json were written).
    """
    options, cfg, names, items = prepare(list(argv or []))
    out = OutputPaths(cfg.output)
    run_id, started, t0 = new_run_id(), now(), time.perf_counter()
    recovered = recover(out)
    hashes = cfg.config_hashes()
    removed = (delete_configuration(out, cfg.model, cfg.weights_sha256, hashes)
               if cfg.recompute else 0)
    done = {} if cfg.recompute else done_methods(out, cfg.model, cfg.weights_sha256, hashes)
    refs = [i for i in items if isinstance(i, ClipRef)]
    skipped = sum(1 for r in refs if not missing_methods(r, cfg.methods, done))
    done = {r.clip_id: done[r.clip_id] for r in refs if r.clip_id in done}  # only listed
    progress_dir = (tempfile.mkdtemp(prefix="vidxai-progress-")
                    if cfg.progress and runs_locally(options) else None)
    if progress_dir:
        record_progress(progress_dir, "skipped", skipped)
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, cfg, names, progress_dir, run_id, done)
    monitor = (ProgressMonitor(progress_dir, len(items)) if progress_dir
               else contextlib.nullcontext())
    stop_job_servers = stop_job_servers_after(p.runner)
    try:
        with monitor:
            result = p.run()
            result.wait_until_finish()
        counters = {m.key.metric.name: m.committed
                    for m in result.metrics().query()["counters"]
                    if m.key.metric.namespace == "vidxai"}
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
        stop_job_servers()
    counts = {"clips_in": counters.get("clips_in", len(items)),
              **counts_from_outputs(out, run_id),
              "clips_skipped": counters.get("clips_skipped", skipped)}
    duplicates = duplicate_identities(out)
    info = {
        "run_id": run_id, "started": started, "seconds": round(time.perf_counter() - t0, 3),
        "argv": list(argv or []), "config": dataclasses.asdict(cfg),
        "config_hash": cfg.config_hash(), "config_hashes": hashes,
        "weights_sha256": cfg.weights_sha256, "versions": versions(),
        "runner": options.get_all_options().get("runner"),
        "counts": counts, "counters": dict(sorted(counters.items())),
        "counts_consistent": counts["clips_in"] == (counts["clips_written"]
                                                    + counts["clips_failed"]
                                                    + counts["clips_skipped"]),
        "duplicate_rows": duplicates,
        "recovered": recovered, "recompute_files_removed": removed,
    }
    write_run_json(out, info)
    if not info["counts_consistent"] or duplicates:
        raise RunFailed(f"clip counts do not add up: {info['counts']}, {duplicates} duplicate "
                        f"rows (see {out.run_json})", info)
    clips_in = counts["clips_in"]
    failed = counts["clips_failed"] / clips_in if clips_in else 0.0
    if failed > cfg.max_failed_fraction:
        raise RunFailed(f"{counts['clips_failed']} of {clips_in} clips were dead-lettered "
                        f"({failed:.0%} > --max-failed-fraction {cfg.max_failed_fraction:g}); "
                        f"see {out.errors}", info)
    return info
