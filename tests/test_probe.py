"""The probes of pipeline.apps.probe: known answers on networks whose behaviour is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.apps.probe import agreement, linearity, window_drops
from tests.test_aosa_approx import (
    LinearModel,
    SeparableQuadratic,
    TwoRegionModel,
    make_engine,
    random_clip,
    tubes_for,
    two_region_clip,
)
from transforms.methods.base import MethodOptions, get_method


def test_agreement_known_answers() -> None:
    exact = np.array([0.3, -0.1, 0.05, -0.4, 0.2])
    same = agreement(exact, exact)
    assert same.spearman == pytest.approx(1) and same.pearson == pytest.approx(1)
    assert same.same_sign == 1 and same.scale == pytest.approx(1)
    flipped = agreement(-exact, exact)
    assert flipped.spearman == pytest.approx(-1) and flipped.same_sign == 0
    assert flipped.scale == pytest.approx(-1)
    half = agreement(2 * exact, exact)  # right ranking, twice too large
    assert half.spearman == pytest.approx(1) and half.scale == pytest.approx(0.5)
    assert np.isnan(agreement(np.zeros(5), exact).scale)
    assert same.top_overlap == 1 and flipped.top_overlap == 0
    # the decile is the largest drops: exact's is index 3 (−0.4); an estimate that gets the
    # largest rise right and the drop wrong scores 0
    assert agreement(np.array([0.3, -0.1, 0.05, 0.0, 0.2]), exact).top_overlap == 0


def test_top_overlap_counts_the_exact_top_decile() -> None:
    from pipeline.apps.probe import top_overlap

    exact = np.arange(20, dtype=float)  # top decile: the 2 largest, indices 19 and 18
    assert top_overlap(exact, exact) == 1
    swapped = exact.copy()
    swapped[[18, 0]] = swapped[[0, 18]]  # one of the two leaves the estimate's top 2
    assert top_overlap(swapped, exact) == 0.5
    assert top_overlap(exact[::-1].copy(), exact) == 0
    assert top_overlap(np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == 0  # k = 1


def test_first_order_is_exact_at_every_strength_on_a_linear_logit() -> None:
    tubes = tubes_for(4, 2)
    engine = make_engine(LinearModel(), random_clip(), 1, score="logit")
    res = linearity(engine, torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners),
                    steps=0, at="input")
    assert set(res) == {0.25, 0.5, 1.0}
    for a, r in res.items():
        assert r.spearman > 0.999 and r.same_sign == 1, a
        assert r.scale == pytest.approx(1, abs=1e-3), a


def test_a_saturating_score_departs_from_first_order_as_occlusion_grows() -> None:
    tubes = tubes_for(4, 2)
    engine = make_engine(TwoRegionModel(), two_region_clip(), 0)
    res = linearity(engine, torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners),
                    (0.05, 1.0), steps=0, at="input")
    assert abs(res[0.05].scale - 1) < 0.05  # small occlusions: first order holds
    assert abs(res[1.0].scale - 1) > 2 * abs(res[0.05].scale - 1)


def test_the_path_estimates_are_exact_at_full_occlusion_where_the_taylor_term_is_not() -> None:
    """``steps``: on a network without interactions between voxels the path's estimates equal
    the full occlusions' changes; the Taylor term at the clip misses their curvature."""
    tubes = tubes_for(4, 2)
    args = (torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners), (1.0,))
    path = linearity(make_engine(SeparableQuadratic(), random_clip(), 0, score="logit"),
                     *args, steps=1, at="input")[1.0]
    taylor = linearity(make_engine(SeparableQuadratic(), random_clip(), 0, score="logit"),
                       *args, steps=0, at="input")[1.0]
    assert path.scale == pytest.approx(1, abs=1e-3) and path.pearson > 0.9999
    assert abs(taylor.scale - 1) > 0.05


class FirstHalfModel(nn.Module):
    """Class 0's logit is the mean of channel 0 over frames 0-3 only (8-frame clips)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, :4].mean(dim=(1, 2, 3))
        return torch.stack([v, torch.zeros_like(v)], dim=1)


def test_window_drops_are_zero_in_the_window_the_network_ignores() -> None:
    x = random_clip()
    x[0, :4] += 1.0  # every occlusion of the first half lowers the logit
    engine = make_engine(FirstHalfModel(), x, 0, score="logit")
    method = get_method("aosa_t", MethodOptions())
    boxes, partners = method.mask_set(tubes_for(4, 2), 8)
    first, second = window_drops(engine, boxes, partners, method.windows(8), 0.0)
    assert first["frames"] == [0, 4] and second["frames"] == [4, 8]
    assert first["median_drop"] > 0 and first["share_drop_over_half"] >= 0
    assert second["median_drop"] == 0 and second["mean_drop"] == 0 and second["q90_drop"] == 0
    base = float(engine.base_score)
    assert second["f_window_blanked"] == pytest.approx(base)
    assert first["f_window_blanked"] == pytest.approx(0.0, abs=1e-6)  # the mean colour is 0


def test_command_line_on_the_synthetic_network(tmp_path, capsys) -> None:
    """Both probes end to end: the job's manifest reader (integer labels, relative videos),
    the committed synth_small3d, one JSON line per row."""
    import json

    from pipeline.apps import probe, synth

    synth.generate_temporal_split(tmp_path, seed=2, temporal_per_class=1, composed_per_class=0,
                                  size=64, num_frames=16)
    manifest = str(tmp_path / "temporal.jsonl")
    common = ["--model", "synth_small3d", "--manifest", manifest, "--precision", "fp32"]
    assert probe.main(["windows", *common, "--rows", "1"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["label"] == 1 and 0 <= line["f"] <= 1
    assert [w["frames"] for w in line["windows"]] == [[0, 8], [8, 16]]
    assert probe.main(["linearity", *common, "--rows", "2", "--alphas", "1"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert set(line["alphas"]) == {"1.0"} and -1 <= line["alphas"]["1.0"]["spearman"] <= 1
    assert probe.main(["linearity", *common, "--rows", "99"]) == 2  # no such row: one line
    assert "probe: --rows [99]:" in capsys.readouterr().err
