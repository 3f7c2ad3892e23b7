"""The benchmarks with targets in turn, then one table of every ratio against its target
(about 15 min on 2 quiet CPU cores), each in a fresh process.

    python -m benchmarks.run_all [--device cpu] [--only 2,4]

Options other than ``--only`` (e.g. ``--device cuda --frames 16 --size 112``) are passed to
every benchmark but two, which take only ``--device`` and run at their targets' settings
(:data:`OWN_SETTINGS`): ``incremental`` (r3d_18, 16 × 112 × 112, N = 196, exact and
``--incremental-keep 0.9``; I3D with its Kinetics weights on the real ``sports2d`` clip,
16 × 224 × 224, N = 196, exact) and ``approx_vs_exact`` (I3D, 16 × 224 × 224, bf16).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone

from benchmarks.common import SAME_FORWARDS_BAND, in_child

BENCHMARKS = ("pipeline_overhead", "osa_vs_captum", "dense_masks", "approx_vs_exact",
              "scaling", "flow_share", "startup", "batch_fill", "flink_vs_local",
              "incremental")
OWN_SETTINGS: dict[str, list[list[str]]] = {
    # benchmarks whose target is stated at given settings run at them (one run per argv; a
    # benchmark that returns rows gets the rows of all its runs)
    "incremental": [["--models", "r3d_18", "--motion", "static", "--keep", "1,0.9"],
                    ["--models", "i3d_kinetics400", "--motion", "footage:sports2d",
                     "--pretrained", "--keep", "1"]],
    "approx_vs_exact": [["--model", "i3d_kinetics400", "--frames", "16", "--size", "224",
                         "--precision", "bf16", "--repeats", "2"]],
}

Verdict = tuple[str, float, str, "bool | None"]  # (what, measured, target, met; None: no target)


def _same(r: dict, a: str, b: str) -> Verdict:
    """a ÷ b total time when both run the same forwards: "<= 1" is judged as a tie within
    :data:`SAME_FORWARDS_BAND`."""
    ratio = r["time"][a] / r["time"][b]
    return (f"{a} / {b} time (the same forwards)", ratio,
            f"<= 1 (tie band {SAME_FORWARDS_BAND:g})", ratio <= SAME_FORWARDS_BAND)


def _outside(r: dict, a: str, b: str) -> Verdict:
    """The two variants' seconds outside the network (their own work), a ÷ b: what their
    totals differ by. For reading, not judged (a few ms either way between runs)."""
    own = {k: r["time"][k] - r["network"][k] for k in (a, b)}
    return (f"{a} / {b} time outside the network ({1000 * own[a]:.0f} / {1000 * own[b]:.0f} "
            "ms)", own[a] / own[b] if own[b] > 0 else float("inf"), "–", None)


def _incremental(rows: list[dict]) -> list[Verdict]:
    out = []
    for r in rows:
        speedup = min(r["speedup"], r["cpu_speedup"])  # as the benchmark judges it
        out.append((f"incremental {r['network']} {r['mode']} (Spearman {r['spearman']:.4f})",
                    speedup, ">= 2 with Spearman >= 0.99",
                    speedup >= 2.0 and r["spearman"] >= 0.99))
    return out


def _added(r: dict, a: str, b: str) -> Verdict:
    """Peak memory each variant adds over the same plain forwards (the network's own), a ÷ b:
    the benchmark's target (the whole process's peak holds the network's activations too)."""
    add = {k: max(r["memory"][k]["peak_mb"] - r["memory"]["forwards"]["peak_mb"], 0.0)
           for k in (a, b)}
    return (f"{a} / {b} peak memory over the network's (+{add[a]:.0f} / +{add[b]:.0f} MB)",
            add[a] / add[b] if add[b] > 0 else float("inf"), "<= 0.1",
            add[a] <= 0.1 * add[b])


VERDICTS: dict[str, Callable[[object], list[Verdict]]] = {
    "pipeline_overhead": lambda r: [("pipeline / pure model forwards", r["ratio"], "<= 1.10",
                                     r["ratio"] <= 1.10)],
    "osa_vs_captum": lambda r: [
        _same(r, "osa", "captum"), _outside(r, "osa", "captum"),
        ("osa / captum peak memory", r["memory"]["osa"]["peak_mb"]
         / r["memory"]["captum"]["peak_mb"], "<= 1",
         r["memory"]["osa"]["peak_mb"] <= r["memory"]["captum"]["peak_mb"])],
    "dense_masks": lambda r: [
        _same(r, "aosa", "dense"), _outside(r, "aosa", "dense"),
        _added(r, "aosa", "dense")],
    "approx_vs_exact": lambda r: [("aosa_approx / aosa time", r["ratio"], "<= 0.05",
                                   r["ratio"] <= 0.05)],
    "flow_share": lambda r: [("(flow + tubes) / scoring", r["share"], "<= 0.05",
                              r["share"] <= 0.05)],
    "startup": lambda r: [(f"{k} (s)", r[k], "<= 0.5", r[k] <= 0.5)
                          for k in ("run_pipeline.py --help", "run_pipeline.py --list-models")],
    "incremental": _incremental,
}


def summary(results: dict[str, object]) -> str:
    """The markdown table of every verdict (the README's speed table is copied from it)."""
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average {load}",
             "| benchmark | ratio | measured | target | |", "| --- | --- | ---: | --- | --- |"]
    for name, result in results.items():
        for what, value, target, met in VERDICTS.get(name, lambda _: [])(result):
            verdict = "–" if met is None else "met" if met else "missed"
            lines.append(f"| `{name}` | {what} | {value:.3f} | {target} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="",
                    help=f"comma list of benchmark numbers (1-{len(BENCHMARKS)})")
    args, rest = ap.parse_known_args(argv)
    chosen = ([BENCHMARKS[int(i) - 1] for i in args.only.split(",")] if args.only
              else list(BENCHMARKS))
    device = [] if "--device" not in rest else rest[rest.index("--device"):][:2]
    results = {}
    for name in chosen:  # each in a fresh process: no benchmark runs beside another's leftovers
        runs = [a + device for a in OWN_SETTINGS[name]] if name in OWN_SETTINGS else [rest]
        out = [in_child(f"benchmarks.{name}:main", argv=a) for a in runs]
        results[name] = (out[0] if len(out) == 1
                         else [row for rows in out for row in rows])
        print(flush=True)
    print(summary(results), flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
