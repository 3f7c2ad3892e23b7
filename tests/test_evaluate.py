"""The evaluation's statistics: bootstrap intervals and per-method summaries."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.apps.evaluate import bootstrap_ci, markdown, summarise


def test_bootstrap_interval_of_the_mean():
    assert bootstrap_ci(np.full(10, 0.5)) == (0.5, 0.5, 0.5)
    values = np.random.default_rng(0).normal(1.0, 1.0, 400)
    mean, lo, hi = bootstrap_ci(values)
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert mean == pytest.approx(values.mean())
    assert lo < mean < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)  # the normal-theory width
    assert np.isnan(bootstrap_ci(np.array([np.nan]))[0])


def test_summary_pools_hits_over_frames_and_skips_clips_without_boxes():
    def row(method, hits, frames, d=0.2, i=0.8):
        rate = None if frames is None else hits / frames
        return {"method": method, "spt_hits": hits, "spt_frames": frames, "spt_rate": rate,
                "deletion_auc": d, "insertion_auc": i, "correct": True, "seconds": 1.0,
                "forward_passes": 17, "backward_passes": 0}

    rows = [row("aosa", 4, 4), row("aosa", 1, 12), row("aosa", None, None),
            row("random", 0, 4)]
    s = summarise(rows)
    assert s["aosa"]["clips"] == 3
    assert s["aosa"]["spt"][0] == pytest.approx((1.0 + 1 / 12) / 2)  # mean of clip rates
    assert s["aosa"]["spt_pooled"] == pytest.approx(5 / 16)  # hits / frames over the split
    assert s["random"]["spt_pooled"] == 0.0
    table = markdown(s)
    assert table.index("| aosa |") < table.index("| random |")  # by S-PT without an order
    assert "| 17 + 0 |" in table
    ordered = markdown(s, ["random", "aosa"])
    assert ordered.index("| random |") < ordered.index("| aosa |")


def test_merged_rows_join_other_methods_on_the_same_clips_only():
    from pipeline.apps.evaluate import merged_rows

    ours = [{"clip_id": "a", "method": "step"}, {"clip_id": "b", "method": "step"}]
    other = [{"clip_id": "a", "method": "aosa"}, {"clip_id": "c", "method": "aosa"},
             {"clip_id": "b", "method": "step"}, {"clip_id": "b", "method": "osa"}]
    assert merged_rows(ours, other) == [{"clip_id": "a", "method": "aosa"},
                                        {"clip_id": "b", "method": "osa"}]


def test_spread_rows_picks_evenly_and_makes_paths_absolute(tmp_path):
    import json

    from pipeline.apps.evaluate import spread_rows

    manifest = tmp_path / "split.jsonl"
    manifest.write_text("".join(json.dumps({"video": f"v/{i}.avi", "label": i}) + "\n"
                                for i in range(8)))
    out = spread_rows(manifest, 4, tmp_path / "o")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == [0, 2, 4, 6]
    assert rows[0]["video"] == str((tmp_path / "v" / "0.avi").resolve())
    assert len(spread_rows(manifest, 50, tmp_path / "p").read_text().splitlines()) == 8


def test_spearman_known_answers_with_ties():
    from pipeline.apps.report.stats import spearman

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert spearman(a, a ** 3) == pytest.approx(1.0)  # monotone: ranks agree
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones_like(a)))
    # x = [1, 2, 3, 4], y = [1, 3, 2, 4]: 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.8)
    # ties share their average rank: x ranks [1, 2.5, 2.5, 4], y [1, 2, 3, 4]; the Pearson
    # correlation of the ranks is 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(
        np.sqrt(0.9))
    assert np.isnan(spearman(np.array([1.0, np.nan, 3]), np.array([1.0, 2, 3])))


def test_map_agreement_reads_maps_from_every_output_and_skips_missing_pairs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.apps.evaluate import map_agreement

    def write(out, rows):
        (out / "saliency").mkdir(parents=True)
        pq.write_table(pa.table({"clip_id": [r[0] for r in rows],
                                 "method": [r[1] for r in rows],
                                 "saliency": [list(r[2]) for r in rows]}),
                       out / "saliency" / "part-0.parquet")

    a, b = tmp_path / "a", tmp_path / "b"
    write(a, [("c1", "aosa_approx", [1.0, 2, 3, 4]), ("c2", "aosa_approx", [4.0, 3, 2, 1])])
    write(b, [("c1", "aosa", [1.0, 2, 3, 4]), ("c2", "aosa", [1.0, 2, 3, 4])])
    summary = {"aosa": {"seconds": 2.0}, "aosa_approx": {"seconds": 0.5},
               "aosa_sgl": {"seconds": 1.0}}  # aosa_sgl_approx absent: that pair is skipped
    text = map_agreement([str(a), str(b)], summary)
    assert text.count("\\n") == 0 and "`aosa_approx` vs `aosa`" in text
    assert "median 0.000" in text and "2 clips" in text and "4.0× faster" in text
    assert map_agreement([str(a)], summary) == ""  # no exact maps: nothing to compare
