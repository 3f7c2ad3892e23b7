"""vidxai command line: explain every clip of a video dataset with AOSA, on Apache Beam.

    python run_pipeline.py --input VIDEOS --output OUT [--model ...] [Beam options]

Writes OUT/saliency/, OUT/metrics/, OUT/errors/ (Parquet) and OUT/run.json. See README.md.
"""

from __future__ import annotations

import logging
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.build import Outputs, build_pipeline, model_args
from pipeline.config import RunConfig
from pipeline.options import config_from_options, with_default_runner
from pipeline.report import counts_from_outputs, now, summary_table, versions, write_run_json
from transforms.io import is_manifest, list_videos


def check_input(spec: str) -> None:
    """Fail fast (before starting workers) when ``--input`` names nothing."""
    if is_manifest(spec):
        if not FileSystems.exists(spec):
            raise ValueError(f"--input manifest {spec} does not exist")
    elif not list_videos(spec):
        raise ValueError(f"--input {spec} names no video files")


def prepare_model(cfg: RunConfig) -> None:
    """Build the network once in the driver: fetches pretrained weights into the cache and
    checks that --checkpoint fits the network, so such problems fail fast with one line."""
    from transforms.scoring import load_scorer

    load_scorer(**model_args(cfg))


def clear_outputs(out: Outputs) -> None:
    """A run replaces the previous run's tables in the same --output (idempotent re-runs)."""
    for table in out.tables():
        if FileSystems.exists(table):
            FileSystems.delete([table])


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict:
    """Parse options, run the job, write run.json; returns its content."""
    options = with_default_runner(PipelineOptions(argv))
    cfg = config_from_options(options)
    check_input(cfg.input)
    prepare_model(cfg)
    out = Outputs(cfg.output)
    clear_outputs(out)
    started, t0 = now(), time.perf_counter()
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, cfg)
    result = p.run()
    result.wait_until_finish()
    counters = {m.key.metric.name: m.committed
                for m in result.metrics().query()["counters"]
                if m.key.metric.namespace == "vidxai"}
    counts = counts_from_outputs(out)
    clips_in = counters.get("clips_in", 0)
    info = {
        "started": started, "seconds": round(time.perf_counter() - t0, 3),
        "config": cfg.__dict__, "config_hash": cfg.config_hash(), "versions": versions(),
        "runner": options.get_all_options().get("runner"),
        "counts": {"clips_in": clips_in, **counts},
        "counts_consistent": clips_in == counts["clips_written"] + counts["clips_failed"],
    }
    write_run_json(out, info)
    return info


def print_help() -> None:
    import argparse

    from pipeline.options import VidxaiOptions

    parser = argparse.ArgumentParser(
        prog="run_pipeline.py", description=__doc__.splitlines()[0],
        epilog="All standard Beam options are accepted too (--runner, --direct_running_mode, "
               "--direct_num_workers, --setup_file, ...); without --runner the job runs on "
               "FnApiRunner. Outputs and columns: README.md.")
    VidxaiOptions._add_argparse_args(parser)
    parser.add_argument("--list-models", action="store_true", help="list networks and exit")
    parser.print_help()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    if "--list-models" in argv:
        from models.registry import available_models, get_spec

        for name in available_models():
            print(f"{name:<18} {get_spec(name).description}")
        return 0
    from models.i3d_weights import WeightsUnavailable

    try:
        info = run(argv)
    except (ValueError, WeightsUnavailable) as exc:
        print(f"vidxai: error: {exc}", file=sys.stderr)
        return 2
    c = info["counts"]
    out = Outputs(info["config"]["output"])
    print(summary_table(out))
    print(f"\nclips in {c['clips_in']} = written {c['clips_written']} + dead-lettered "
          f"{c['clips_failed']}  ({info['seconds']:.1f} s)")
    print(f"results: {out.join('saliency')}  {out.join('metrics')}  {out.join('errors')}  "
          f"{out.run_json}")
    if not info["counts_consistent"]:
        print("vidxai: error: clip counts do not add up (see run.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
