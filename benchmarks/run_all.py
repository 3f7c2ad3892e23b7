"""All nine benchmarks in turn, each with its defaults (about 25 min on 2 CPU cores).

    python -m benchmarks.run_all [--device cpu] [--only 2,4]

Options other than ``--only`` (e.g. ``--device cuda --frames 16 --size 112``) are passed to
every benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = ("pipeline_overhead", "osa_vs_captum", "dense_masks", "approx_vs_exact",
              "scaling", "flow_share", "startup", "batch_fill", "flink_vs_local")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="",
                    help=f"comma list of benchmark numbers (1-{len(BENCHMARKS)})")
    args, rest = ap.parse_known_args(argv)
    chosen = ([BENCHMARKS[int(i) - 1] for i in args.only.split(",")] if args.only
              else list(BENCHMARKS))
    for name in chosen:
        importlib.import_module(f"benchmarks.{name}").main(rest)
        print(flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
