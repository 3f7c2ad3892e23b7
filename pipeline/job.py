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

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from pipeline.build import build_pipeline
from pipeline.config import RunConfig
from pipeline.options import config_from_options, with_default_runner
from pipeline.outputs import counts_from_outputs, now, versions, write_run_json
from pipeline.progress import ProgressMonitor
from pipeline.strict_args import check_known_args
from transforms.io import list_clips
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
    """True when the SDK workers are processes of this machine."""
    runner = str(options.view_as(StandardOptions).runner or "")
    runner = runner.rsplit(".", 1)[-1]
    if runner in LOCAL_RUNNERS:
        return True
    portable = options.view_as(PortableOptions)
    env, where = portable.environment_type, str(portable.environment_config or "")
    return runner == "PortableRunner" and (
        str(env).upper() == "LOOPBACK"
        or (str(env).upper() == "EXTERNAL" and where.split(":")[0] in ("localhost",
                                                                      "127.0.0.1")))


def prepare(argv: list[str]) -> tuple[PipelineOptions, RunConfig, list[str] | None, int]:
    """Everything that can fail before the pipeline starts, with one-line ValueErrors.

    Returns:
        (options, configuration with ``weights_sha256``, class names, clips listed).
    """
    check_known_args(argv)
    options = with_default_runner(PipelineOptions(argv))
    cfg = config_from_options(options)
    if runs_locally(options):
        resolve_device(cfg.device)  # the workers are this machine: a missing GPU fails now
    handler = cfg.handler()
    cfg = dataclasses.replace(cfg, weights_sha256=handler.validate())
    names = handler.class_names()
    cfg.fixed_target(names)
    total = sum(1 for _ in list_clips(cfg.input, cfg.num_frames, cfg.frame_stride, names))
    return options, cfg, names, total


def clear_outputs(out: OutputPaths) -> None:
    """A run replaces the previous run's tables in the same ``--output`` (idempotent)."""
    for table in out.tables():
        if FileSystems.exists(table):
            FileSystems.delete([table])


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Run the job; returns the content of ``run.json``.

    Raises:
        ValueError: a bad option or input (before any work).
        RunFailed: more than ``--max-failed-fraction`` of the clips failed, or the counts do
            not add up (after the outputs and run.json were written).
    """
    options, cfg, names, listed = prepare(list(argv or []))
    out = OutputPaths(cfg.output)
    clear_outputs(out)
    progress_dir = (tempfile.mkdtemp(prefix="vidxai-progress-")
                    if cfg.progress and runs_locally(options) else None)
    started, t0 = now(), time.perf_counter()
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, cfg, names, progress_dir)
    monitor = (ProgressMonitor(progress_dir, listed) if progress_dir
               else contextlib.nullcontext())
    try:
        with monitor:
            result = p.run()
            result.wait_until_finish()
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
    counters = {m.key.metric.name: m.committed
                for m in result.metrics().query()["counters"]
                if m.key.metric.namespace == "vidxai"}
    counts = counts_from_outputs(out)
    clips_in = counters.get("clips_in", listed)
    info = {
        "started": started, "seconds": round(time.perf_counter() - t0, 3),
        "config": dataclasses.asdict(cfg), "config_hash": cfg.config_hash(),
        "weights_sha256": cfg.weights_sha256, "versions": versions(),
        "runner": options.get_all_options().get("runner"),
        "counts": {"clips_in": clips_in, **counts},
        "counts_consistent": clips_in == counts["clips_written"] + counts["clips_failed"],
    }
    write_run_json(out, info)
    if not info["counts_consistent"]:
        raise RunFailed(f"clip counts do not add up: {info['counts']} (see {out.run_json})",
                        info)
    failed = counts["clips_failed"] / clips_in if clips_in else 0.0
    if failed > cfg.max_failed_fraction:
        raise RunFailed(f"{counts['clips_failed']} of {clips_in} clips were dead-lettered "
                        f"({failed:.0%} > --max-failed-fraction {cfg.max_failed_fraction:g}); "
                        f"see {out.errors}", info)
    return info
