"""The benchmarks' references and commands on a tiny network: equal maps, and they run.

No time is asserted: the benchmarks print ratios, the tests only check what they compare.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import (
    approx_vs_exact,
    batch_fill,
    common,
    dense_masks,
    flow_share,
    osa_vs_captum,
)

TINY = ["--model", "tiny", "--frames", "4", "--size", "8", "--batch-size", "5"]  # N = 64


def tiny_setup():
    args = common.parser("test").parse_args(TINY)
    scorer = common.load_scorer(args)
    frames = common.synthetic_clip(args.frames, args.size)
    return args, scorer, frames, scorer.to_input(frames)


def test_dense_reference_equals_aosa():
    args, scorer, frames, x = tiny_setup()
    tubes = dense_masks.clip_tubes(frames, args.size)
    target = dense_masks.predicted_class(scorer, x)
    ours = dense_masks.aosa_map(scorer, x, tubes, target, args.batch_size)
    ref = dense_masks.dense_map(scorer, x, tubes, target, args.batch_size)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


def test_osa_equals_captum_in_the_benchmark():
    args, scorer, _, x = tiny_setup()
    target = osa_vs_captum.predicted_class(scorer, x)
    ours = osa_vs_captum.osa_map(scorer, x, target, args.batch_size)
    ref = osa_vs_captum.captum_map(scorer, x, target, args.batch_size)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


def test_synthetic_clip_shape_and_header():
    clip = common.synthetic_clip(5, 24)
    assert clip.shape == (5, 24, 24, 3) and clip.dtype == np.uint8
    args = argparse.Namespace(device="cpu", threads=0, model="tiny", frames=5, size=24,
                              batch_size=8, precision="fp32", repeats=1)
    text = common.header("title", args, N=4)
    assert "date " in text and "UTC" in text and "settings: model tiny" in text


def test_commands_print_their_ratios(capsys):
    approx_vs_exact.main(TINY)
    flow_share.main(TINY)
    batch_fill.main([*TINY, "--repeats", "1"])
    out = capsys.readouterr().out
    assert "aosa_approx / aosa = " in out and "(flow + tubes) / scoring = " in out
    assert out.count("cross-clip batching would save") == len(batch_fill.WORKLOADS)


def test_report_scale_writes_the_sinks_schemas(tmp_path):
    """The report benchmark's synthetic outputs keep the sink's schemas (it broke once when a
    column was added to the sink)."""
    import pyarrow.parquet as pq

    from benchmarks import report_scale
    from transforms.sink import METRICS_SCHEMA, saliency_schema

    report_scale.write(tmp_path, 8)
    for name, schema in (("metrics", METRICS_SCHEMA),
                         ("saliency", saliency_schema(report_scale.SHAPE, "float16"))):
        files = sorted((tmp_path / name).rglob("*.parquet"))
        assert len(files) == len(report_scale.METHODS)
        wanted = [f.name for f in schema if f.name not in ("model", "method")]
        for f in files:
            table = pq.read_table(f)
            assert table.column_names == wanted and table.num_rows == 2
            assert table.column("clip_id").null_count == 0


def test_bootstrap_benchmark_compares_the_two_intervals(capsys):
    from benchmarks import bootstrap_interval

    bootstrap_interval.main(["--trials", "3", "--clips", "12", "--time-clips", "50"])
    out = capsys.readouterr().out
    assert out.count("12 clips: ") == 3 and "50 clips: " in out
    # equal values: the percentile interval is the value, BCa has none
    assert "20 equal values: percentile (0.5, 0.5), BCa (nan, nan)" in out


def test_run_all_summary_judges_every_target():
    """run_all's closing table: one row per ratio, met / missed against its target (known
    answers; the shapes are those the benchmarks' ``main`` functions return)."""
    from benchmarks.run_all import summary

    results = {
        "pipeline_overhead": {"ratio": 1.05},
        "osa_vs_captum": {"time": {"osa": 2.0, "captum": 1.0},
                          "network": {"osa": 1.9, "captum": 0.95},
                          "memory": {"osa": {"peak_mb": 1.0}, "captum": {"peak_mb": 4.0}}},
        "dense_masks": {"time": {"aosa": 0.9, "dense": 1.0},
                        "network": {"aosa": 0.88, "dense": 0.96},
                        "memory": {"aosa": {"peak_mb": 105.0}, "dense": {"peak_mb": 140.0},
                                   "forwards": {"peak_mb": 100.0}}},
        "approx_vs_exact": {"ratio": 1 / 25},
        "flow_share": {"share": 0.01},
        "startup": {"run_pipeline.py --help": 0.1, "run_pipeline.py --list-models": 0.7},
        "batch_fill": {"x": (1.0, 0.9)},  # a decision: no row
        "incremental": [{"network": "r3d_18", "mode": "keep 0.85", "speedup": 2.2,
                         "cpu_speedup": 1.9, "spearman": 0.995}],
    }
    rows = [line for line in summary(results).splitlines() if line.startswith("| `")]
    verdicts = [line.rsplit("|", 2)[1].strip() for line in rows]
    # Totals of the same forwards tie within the band (2.0: missed, 0.9: met); the work
    # outside the network is shown, not judged.
    assert verdicts == ["met", "missed", "–", "met", "met", "–", "missed", "met", "met", "met",
                        "missed", "missed"]
    assert "| 2.000 |" in rows[1] and "| 1.900 |" in rows[-1]  # the smaller speed-up judges
    assert "| 2.000 |" in rows[2] and "(100 / 50 ms)" in rows[2]  # own work: 0.1 s / 0.05 s
    assert "| 0.500 |" in rows[5]  # 0.02 / 0.04


def test_same_forwards_tie_band_edges():
    from benchmarks.common import SAME_FORWARDS_BAND
    from benchmarks.run_all import _same

    def verdict(aosa: float) -> bool:
        return _same({"time": {"aosa": aosa, "dense": 1.0}}, "aosa", "dense")[3]

    assert verdict(0.95) and verdict(1.0) and verdict(SAME_FORWARDS_BAND)
    assert not verdict(SAME_FORWARDS_BAND + 1e-3) and not verdict(1.5)
