"""Command-line options (a Beam ``PipelineOptions`` subclass) → :class:`RunConfig`."""

from __future__ import annotations

import argparse
import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline.config import RunConfig, declared_options
from pipeline.flags import add_arguments

LOCAL_RUNNER = "FnApiRunner"  # Beam 2.77's DirectRunner first tries to download Prism


class VidxaiOptions(PipelineOptions):
    """vidxai's own options (every declared option with a flag, the registered methods'
    included); every standard Beam option is accepted as well."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser, declared_options().values())


def config_from_options(options: PipelineOptions) -> RunConfig:
    """A resolved, validated RunConfig; ValueError with a one-line reason otherwise."""
    o = options.view_as(VidxaiOptions)
    values = {name: getattr(o, name) for name, opt in declared_options().items() if opt.flag}
    n = options.view_as(DirectOptions).direct_num_workers
    values["workers"] = (os.cpu_count() or 1) if n == 0 else max(1, int(n or 1))
    return RunConfig(**values).resolve()


def with_default_runner(options: PipelineOptions) -> PipelineOptions:
    """Pick FnApiRunner unless the user chose a runner."""
    std = options.view_as(StandardOptions)
    if not std.runner:
        std.runner = LOCAL_RUNNER
    return options
