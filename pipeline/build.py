"""The only place where stages are wired together.

clip list → decode → flow → tubes → explain (+ metrics) → sink; every stage's dead letters are
flattened into ``errors/``.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from pipeline.config import RunConfig
from transforms.deadletter import ERRORS
from transforms.decode import DecodeFn
from transforms.explain import ExplainFn
from transforms.flow import FlowFn
from transforms.io import ClipSampling, ListClips
from transforms.progress import RecordProgress
from transforms.remote import FileSystemsOptions
from transforms.sink import OutputPaths, RunInfo, WriteResults
from transforms.tubes import TubesFn


def run_info(cfg: RunConfig, run_id: str = "") -> RunInfo:
    return RunInfo(model=cfg.model, weights_sha256=str(cfg.weights_sha256),
                   config_hashes=tuple(cfg.config_hashes().items()),
                   frame_stride=cfg.frame_stride, run_id=run_id)


def sampling(cfg: RunConfig) -> ClipSampling:
    return ClipSampling(cfg.num_frames, cfg.frame_stride, cfg.clips_per_video, cfg.clip_hop)


def build_pipeline(p: beam.Pipeline, cfg: RunConfig, class_names: list[str] | None = None,
                   progress_dir: str | None = None, run_id: str = "",
                   done: dict[str, frozenset[str]] | None = None
                   ) -> dict[str, beam.PCollection]:
    """Add the whole job to ``p``.

    Args:
        cfg: a resolved configuration whose weights were validated (``weights_sha256`` set).
        class_names: the network's class names (for manifest labels given by name).
        progress_dir: where workers record finished clips for the progress line (None: off).
        run_id: written next to every row of this run.
        done: clip id → methods ``--output`` already holds for this configuration (skipped).

    Returns:
        The ``results`` (ClipResult) and ``errors`` (ErrorRecord) PCollections.
    """
    spec = cfg.spec
    fs = FileSystemsOptions.of(p.options)  # every step that touches files sets them first
    clips, list_errors = p | "ListClips" >> ListClips(cfg.input, sampling(cfg), class_names,
                                                      cfg.methods, done, fs)
    decoded = clips | "Decode" >> beam.ParDo(
        DecodeFn(cfg.num_frames, cfg.size, spec.resize_ratio, cfg.frame_stride,
                 cfg.thread_budget(), fs)
    ).with_outputs(ERRORS, main="ok")
    flowed = decoded.ok | "Flow" >> beam.ParDo(FlowFn()).with_outputs(ERRORS, main="ok")
    tubed = flowed.ok | "Tubes" >> beam.ParDo(
        TubesFn(cfg.stride, cfg.box_size, cfg.topk)).with_outputs(ERRORS, main="ok")
    handler = dataclasses.replace(cfg.handler(), filesystems=fs)
    explained = tubed.ok | "Explain" >> beam.ParDo(
        ExplainFn(handler, cfg.explain_settings())).with_outputs(ERRORS, main="ok")

    errors = ((list_errors, decoded[ERRORS], flowed[ERRORS], tubed[ERRORS],
               explained[ERRORS])
              | "AllErrors" >> beam.Flatten())
    results = explained.ok
    (results, errors) | "Write" >> WriteResults(
        OutputPaths(cfg.output), run_info(cfg, run_id), cfg.store_options(), fs)
    # Progress counts clips as they finish, not as their files are committed (a commit holds
    # up to --clips-per-file clips, so the line would jump); run.json's counts are the
    # committed ones.
    results | "ProgressWritten" >> RecordProgress(progress_dir, "written")
    errors | "ProgressFailed" >> RecordProgress(progress_dir, "failed")
    return {"results": results, "errors": errors}
