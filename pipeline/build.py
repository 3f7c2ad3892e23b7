"""The only place where stages are wired together.

clip list → decode → flow → tubes → explain (+ metrics) → Parquet; every stage's dead letters
are flattened into ``errors/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.config import RunConfig
from pipeline.schema import ERROR_SCHEMA, METRICS_SCHEMA, saliency_schema
from transforms.deadletter import ERRORS
from transforms.decode import DecodeFn
from transforms.flow import FlowFn
from transforms.io import ListClips
from transforms.saliency import METRICS, ExplainFn, ExplainSettings
from transforms.tubes import TubesFn

# A 16×224×224 float16 map is 1.6 MB: keep Parquet record batches small.
SALIENCY_BATCH = 8


@dataclass(frozen=True)
class Outputs:
    """Where a run writes (all under ``--output``)."""

    root: str

    def join(self, *parts: str) -> str:
        return FileSystems.join(self.root, *parts)

    @property
    def saliency(self) -> str:
        return self.join("saliency", "part")

    @property
    def metrics(self) -> str:
        return self.join("metrics", "part")

    @property
    def errors(self) -> str:
        return self.join("errors", "part")

    @property
    def run_json(self) -> str:
        return self.join("run.json")

    def tables(self) -> list[str]:
        return [self.join("saliency"), self.join("metrics"), self.join("errors")]


def explain_settings(cfg: RunConfig) -> ExplainSettings:
    return ExplainSettings(
        methods=cfg.methods, target=cfg.target, fixed_target=cfg.fixed_target(),
        batch_size=cfg.batch_size, aggregation=cfg.aggregation, metrics=cfg.metrics,
        metric_steps=cfg.metric_steps, pointing_radius=float(cfg.pointing_radius),
        insertion_blur=cfg.insertion_blur)


def model_args(cfg: RunConfig) -> dict:
    return dict(model=cfg.model, checkpoint=cfg.checkpoint, device=cfg.device,
                precision=cfg.precision, seed=cfg.seed, cache_dir=cfg.cache_dir,
                threads=cfg.threads)


def build_pipeline(p: beam.Pipeline, cfg: RunConfig) -> dict[str, beam.PCollection]:
    """Add the whole job to ``p``; returns the saliency, metrics and error PCollections."""
    spec = cfg.spec
    names = spec.class_names() if spec.class_names else None
    run_info = {"model": cfg.model, "config_hash": cfg.config_hash(),
                "frame_stride": cfg.frame_stride}

    clips, list_errors = p | "ListClips" >> ListClips(cfg.input, cfg.num_frames,
                                                      cfg.frame_stride, names)
    decoded = clips | "Decode" >> beam.ParDo(
        DecodeFn(cfg.num_frames, cfg.size, spec.resize_ratio, cfg.frame_stride)
    ).with_outputs(ERRORS, main="ok")
    flowed = decoded.ok | "Flow" >> beam.ParDo(FlowFn()).with_outputs(ERRORS, main="ok")
    tubed = flowed.ok | "Tubes" >> beam.ParDo(
        TubesFn(cfg.stride, cfg.box_size, cfg.topk)).with_outputs(ERRORS, main="ok")
    explained = tubed.ok | "Explain" >> beam.ParDo(
        ExplainFn(model_args(cfg), explain_settings(cfg), run_info)
    ).with_outputs(ERRORS, METRICS, main="saliency")

    errors = ((list_errors, decoded[ERRORS], flowed[ERRORS], tubed[ERRORS],
               explained[ERRORS])
              | "AllErrors" >> beam.Flatten()
              | "ErrorRows" >> beam.Map(lambda e: e.to_row()))

    out = Outputs(cfg.output)
    explained.saliency | "WriteSaliency" >> beam.io.WriteToParquet(
        out.saliency, saliency_schema(cfg.num_frames, cfg.size), file_name_suffix=".parquet",
        record_batch_size=SALIENCY_BATCH)
    errors | "WriteErrors" >> beam.io.WriteToParquet(
        out.errors, ERROR_SCHEMA, file_name_suffix=".parquet", num_shards=1)
    if cfg.metrics:
        explained[METRICS] | "WriteMetrics" >> beam.io.WriteToParquet(
            out.metrics, METRICS_SCHEMA, file_name_suffix=".parquet", num_shards=1,
            record_batch_size=256)
    return {"saliency": explained.saliency, "metrics": explained[METRICS], "errors": errors}
