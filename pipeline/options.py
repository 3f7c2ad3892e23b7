"""Command-line options (a Beam ``PipelineOptions`` subclass) → :class:`RunConfig`."""

from __future__ import annotations

import argparse
import dataclasses
import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline.config import RunConfig
from pipeline.flags import add_arguments

LOCAL_RUNNER = "FnApiRunner"  # Beam 2.77's DirectRunner first tries to download Prism


class VidxaiOptions(PipelineOptions):
    """vidxai's own options; every standard Beam option is accepted as well."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)


def config_from_options(options: PipelineOptions) -> RunConfig:
    """A resolved, validated RunConfig; ValueError with a one-line reason otherwise."""
    o = options.view_as(VidxaiOptions)
    for flag in ("input", "output"):
        if not getattr(o, flag):
            raise ValueError(f"--{flag} is required")
    fields = {f.name for f in dataclasses.fields(RunConfig)} - {"weights_sha256",
                                                                 "weights_uri", "workers"}
    values = {k: getattr(o, k) for k in fields}
    n = options.view_as(DirectOptions).direct_num_workers
    values["workers"] = (os.cpu_count() or 1) if n == 0 else max(1, int(n or 1))
    values["methods"] = tuple(o.methods.split(","))
    return RunConfig(**values).resolve()


def with_default_runner(options: PipelineOptions) -> PipelineOptions:
    """Pick FnApiRunner unless the user chose a runner."""
    std = options.view_as(StandardOptions)
    if not std.runner:
        std.runner = LOCAL_RUNNER
    return options
