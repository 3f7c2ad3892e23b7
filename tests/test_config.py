"""Run configuration: defaults scaled from the paper, targets, the result hash."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import RunConfig
from transforms.explain import ExplainSettings, choose_target


def cfg(**kw) -> RunConfig:
    return RunConfig(input="in", output="out", **kw).resolve().replace(weights_sha256="0" * 64)


def test_defaults_scale_the_paper_setting_with_the_input_size():
    r3d = cfg(model="r3d_18")
    assert (r3d.size, r3d.num_frames, r3d.stride, r3d.box_size) == (112, 16, 8, 16)
    assert r3d.pointing_radius == pytest.approx(7.0)
    i3d = cfg(model="i3d_kinetics400")
    assert (i3d.size, i3d.stride, i3d.box_size, i3d.pointing_radius) == (224, 16, 32, 14.0)


def test_target_by_name_index_or_keyword():
    assert cfg(model="synth_small3d", target="move_up").fixed_target() == 2
    assert cfg(model="synth_small3d", target="3").fixed_target() == 3
    assert cfg(model="synth_small3d", target="label").fixed_target() is None
    with pytest.raises(ValueError, match="not 'predicted', 'label'"):
        cfg(model="synth_small3d", target="jumping")
    with pytest.raises(ValueError, match="out of range"):
        cfg(model="synth_small3d", target="4")


def test_choose_target_per_clip():
    s = ExplainSettings(methods=("aosa",), target="label", fixed_target=None, batch_size=4)
    assert choose_target(s, 2, 0, 4) == (2, "label")
    with pytest.raises(ValueError, match="has no label"):
        choose_target(s, None, 0, 4)
    s = dataclasses.replace(s, target="predicted")
    assert choose_target(s, 2, 1, 4) == (1, "predicted")
    s = dataclasses.replace(s, fixed_target=3)
    assert choose_target(s, 2, 1, 4) == (3, "fixed")


def test_config_hash_tracks_results_not_execution():
    base = cfg(model="tiny")
    assert base.config_hash() == base.replace(batch_size=64, output="x",
                                                     device="cpu").config_hash()
    assert base.config_hash() != base.replace(stride=4).config_hash()
    assert base.config_hash() != base.replace(aggregation="paper").config_hash()
    assert base.config_hash() != base.replace(score="logit").config_hash()
    assert base.config_hash() != base.replace(fill="blur").config_hash()
    # The weights enter by content: another SHA-256 is another configuration, a renamed copy
    # of the same file is not.
    assert base.config_hash() != base.replace(weights_sha256="1" * 64).config_hash()
    assert base.config_hash() == base.replace(checkpoint="/x/renamed.pt").config_hash()
    # A fill parameter only matters for the fill that uses it.
    assert base.config_hash() == base.replace(fill_window=3).config_hash()


def test_each_method_hash_leaves_out_what_only_other_methods_use():
    base = cfg(model="tiny", methods=("aosa", "aosa_t", "step"))
    other = base.replace(t_window=4, ep_iterations=7, methods=("aosa",))
    # aosa's maps do not depend on AOSA-T's window, STEP's iterations or the method list ...
    assert base.config_hash("aosa") == other.config_hash("aosa")
    assert base.config_hash("aosa") == base.replace(
        saliency_dtype="uint8", clips_per_file=3, recompute=True).config_hash("aosa")
    # ... but those of the methods that use them do, and so does a shared option; a tube
    # option changes the tube methods' hashes only (tests/test_config_identity.py: all).
    assert base.config_hash("aosa_t") != other.config_hash("aosa_t")
    assert base.config_hash("step") != other.config_hash("step")
    for m in base.methods:
        assert base.config_hash(m) != base.replace(precision="bf16").config_hash(m)
        assert ((base.config_hash(m) != base.replace(stride=4).config_hash(m))
                == (m != "step"))
    assert base.config_hashes() == {m: base.config_hash(m) for m in base.methods}
    # The run's own hash still names the whole run, method list included.
    assert base.config_hash() != other.config_hash()


def test_thread_budget_shares_the_cores_between_workers(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    base = cfg(model="tiny")
    assert base.thread_budget() == 0  # one worker: the libraries' own default
    assert base.replace(workers=2).thread_budget() == 4
    assert base.replace(workers=16).thread_budget() == 1
    assert base.replace(workers=2, threads=3).thread_budget() == 3
    assert base.replace(workers=2).handler().threads == 4
