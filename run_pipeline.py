"""vidxai command line: explain every clip of a video dataset with AOSA, on Apache Beam.

    python run_pipeline.py --input VIDEOS --output OUT [--model ...] [Beam options]
    python run_pipeline.py report --output OUT [--compare OTHER] [...]   (report --help)
    python run_pipeline.py concepts --input CLIPS --concepts DIR --output OUT [...]  (Video-TCAV)

Writes OUT/saliency/, OUT/metrics/, OUT/errors/ (Parquet) and OUT/run.json. See docs/USER_GUIDE.md.
This file only parses the command line; the job is :func:`pipeline.job.run`, the report
:func:`pipeline.apps.report.cli.main`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

# Exit statuses a scheduler can act on (docs/USER_GUIDE.md: Failures).
EXIT_FAILED = 1  # the run ended but failed: nothing written, too many dead letters, a bug
EXIT_USAGE = 2  # a bad option or input, found before any work
EXIT_TEMPFAIL = 75  # another run holds the output (sysexits' EX_TEMPFAIL: try again later)
# SIGINT / SIGTERM: 130 / 143 (128 + the signal), what was committed stays

USAGE_EPILOG = ("All standard Beam options are accepted too (--runner, --direct_running_mode, "
                "--direct_num_workers, --setup_file, ...); without --runner the job runs on "
                "FnApiRunner. Unknown options stop the run. Outputs and columns: "
                "docs/USER_GUIDE.md. "
                "'run_pipeline.py report --output OUT' reports on a finished run (report "
                "--help).")


def print_help() -> None:
    import argparse

    from pipeline.flags import add_arguments, help_options  # neither Beam nor torch: fast

    parser = argparse.ArgumentParser(prog="run_pipeline.py", description=__doc__.splitlines()[0],
                                     epilog=USAGE_EPILOG)
    add_arguments(parser, help_options())
    parser.add_argument("--list-models", action="store_true", help="list networks and exit")
    parser.print_help()


def list_models() -> None:
    from models.catalog import DESCRIPTIONS  # no torch: the list prints at once

    for name in sorted(DESCRIPTIONS):
        print(f"{name:<18} {DESCRIPTIONS[name]}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        from pipeline.apps.report.cli import main as report_main

        return report_main(argv[1:])
    if argv[:1] == ["concepts"]:
        return concepts_main(argv[1:])
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    if "--list-models" in argv:
        list_models()
        return 0
    from models.i3d_weights import WeightsUnavailable
    from pipeline.job import Interrupted, RunFailed, on_signal, run
    from pipeline.lock import LockHeld
    from pipeline.outputs import summary_table
    from transforms.sink import OutputPaths

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    failed = False
    try:
        info = run(argv)
    except (ValueError, WeightsUnavailable) as exc:
        print(f"vidxai: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LockHeld as exc:
        print(f"vidxai: error: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except Interrupted as exc:
        print(f"vidxai: {exc}", file=sys.stderr)
        return exc.exit_code
    except RunFailed as exc:
        info, failed = exc.info, True
        print(f"vidxai: error: {exc}", file=sys.stderr)
    out = OutputPaths(info["config"]["output"])
    c = info["counts"]
    print(summary_table(out, info))
    print(f"\nclips in {c['clips_in']} = written {c['clips_written']} + dead-lettered "
          f"{c['clips_failed']} + skipped (already in the output) "
          f"{c['clips_skipped']}  ({info['seconds']:.1f} s)")
    print(f"results: {out.saliency}  {out.metrics}  {out.errors}  {out.run_json}")
    return EXIT_FAILED if failed else 0


def concepts_main(argv: list[str]) -> int:
    """``run_pipeline.py concepts``: Video-TCAV over a dataset (docs/CONCEPTS.md)."""
    from pipeline.concepts.job import run, summary
    from pipeline.concepts.options import parser

    if "-h" in argv or "--help" in argv:
        parser().print_help()
        return 0
    try:
        info = run(argv)
    except ValueError as exc:
        print(f"vidxai concepts: error: {exc}", file=sys.stderr)
        return 2
    print(summary(info))
    print(f"\nclips: {info['clips_featured']} computed, {info['clips_cached']} from the cache; "
          f"{info['rows_written']} rows written, {info['rows_already_done']} already done "
          f"({info['seconds']:.1f} s)")
    return 0


def exit_now(code: int) -> None:
    """Flush and leave without the interpreter's teardown.

    Every output is committed and ``run.json`` written before ``main`` returns. With
    ``--direct_running_mode=multi_processing`` the teardown of the gRPC / torch threads the
    runner leaves behind intermittently aborts the process ("terminate called without an active
    exception", exit -6, seen once in four 2-worker runs of 200 clips), turning a finished run
    into a failure; skipping the teardown keeps the exit code the run's own.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
