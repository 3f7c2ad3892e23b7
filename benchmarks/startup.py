"""7. Start-up: ``run_pipeline.py --help`` and ``--list-models`` against a 0.5 s target.

    python -m benchmarks.startup [--repeats 3]

Each command runs in a fresh interpreter (``sys.executable``, the repository's
``run_pipeline.py``), ``--repeats`` times interleaved; the median wall time is printed with
the target and, for scale, the time of an interpreter that only imports torch and one that
only imports Apache Beam (what a command pays when it imports either). The fixed cost of a
1-clip run is printed by benchmark 1 (``pipeline_overhead``: the 1-clip job minus the per-clip
time).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

TARGET = 0.5
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "run_pipeline.py --help": [str(ROOT / "run_pipeline.py"), "--help"],
    "run_pipeline.py --list-models": [str(ROOT / "run_pipeline.py"), "--list-models"],
    "python -c 'import torch'": ["-c", "import torch"],
    "python -c 'import apache_beam'": ["-c", "import apache_beam"],
}
CHECKED = ("run_pipeline.py --help", "run_pipeline.py --list-models")


def wall(argv: list[str]) -> float:
    """Seconds of one fresh interpreter running ``argv`` (its output discarded)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__.splitlines()[0], repeats=3).parse_args(argv)
    print(common.header("7. start-up of the command line", args), flush=True)
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            times[name].append(wall(cmd))
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, t in medians.items():
        verdict = (f" (target <= {TARGET} s: {'met' if t <= TARGET else 'MISSED'})"
                   if name in CHECKED else "")
        print(f"{name:<34} {t:6.2f} s{verdict}")
    return medians


if __name__ == "__main__":
    main()
