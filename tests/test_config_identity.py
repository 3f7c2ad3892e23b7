"""Per-method configuration identity: each method's ``config_hash`` covers the common options
and exactly the options the method reads (``Method.reads``), checked against the maps.

Every declared option is enumerated (a new field fails these tests until it is classified and
given a second value here). The map test runs every method on one small clip with the tiny
network through :func:`transforms.explain.explain_clip` (the pipeline's per-clip function),
tubes built from the clip's Farneback flow with the configuration's ``stride`` / ``box_size`` /
``topk``, as the pipeline does: a method-specific option changes a method's map if and only
if the method declares it, and its hash changes exactly then.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline.options  # noqa: F401  (declares vidxai's flags to Beam, for check_known_args)
from pipeline.config import (
    RunConfig,
    declared_options,
    hash_options,
    identity_table,
    method_options,
    placed,
)
from pipeline.strict_args import check_known_args
from tests.test_tubes import translating_clip
from transforms.explain import explain_clip
from transforms.flow import farneback_flow
from transforms.methods.base import FILL_PARAMETERS, METHODS, available_methods, get_method
from transforms.options import COMMON, EXECUTION, RUN
from transforms.records import ClipData, ClipRef, ClipTubes
from transforms.scoring import Scorer
from transforms.tubes import build_tubes

ROOT = Path(__file__).resolve().parents[1]
FIELDS = tuple(declared_options())
METHOD_NAMES = tuple(available_methods())
FILL_PARAMS = tuple(p.name for params in FILL_PARAMETERS.values() for p in params)
COMMON_NAMES, RUN_NAMES = placed(COMMON), placed(RUN)

# A small valid configuration; the defaults derived from others (box size, fill parameters)
# and the methods' own (the score) are given so that changing one option changes nothing else.
BASE = dict(input="in", output="out", model="tiny", size=24, num_frames=8, stride=6,
            box_size=12, topk=2, fill_sigma=1.0, fill_window=8, pointing_radius=1.5,
            ep_iterations=3, ep_areas=(0.1, 0.3), batch_size=8, metric_steps=4, device="cpu",
            score="prob", methods=METHOD_NAMES)

# A second valid value of every option.
OTHER = {
    "input": "in2", "output": "out2", "model": "r3d_18", "checkpoint": "/x/w.pt",
    "num_classes": 5, "mean": (0.4, 0.4, 0.4), "std": (0.3, 0.3, 0.3),
    "class_names": "names.txt", "layer": "stem", "methods": ("aosa", "osa"), "stride": 8,
    "box_size": 8, "topk": 1, "num_frames": 6, "size": 32, "frame_stride": 2,
    "batch_size": 3, "device": "cuda:0", "precision": "bf16", "target": "label",
    "score": "logit", "aggregation": "paper", "fill": "blur", "fill_sigma": 3.0,
    "fill_window": 3, "approx_adjust": True, "approx_steps": 2, "approx_at": "input",
    "t_window": 2, "t_hop": 1, "osa_window": (4, 6, 6), "osa_strides": (2, 3, 3),
    "ep_iterations": 4, "ep_areas": (0.2, 0.3), "fep_keep": 0.25, "ep_lr": 0.1,
    "ep_reward": "prob", "ep_area_gain": 16.0,
    "step_core": 300.0, "metrics": False,
    "metric_steps": 5, "pointing_radius": 3.0, "insertion_blur": 1.0, "seed": 1,
    "cache_dir": "/c", "threads": 2, "max_failed_fraction": 0.5, "progress": False,
    "recompute": True, "clips_per_video": 2, "clip_hop": 4, "clips_per_file": 3,
    "max_file_mb": 2, "saliency_dtype": "uint8", "saliency_pool": (2, 2), "workers": 2,
    "incremental": True, "incremental_keep": 0.2, "weights_sha256": "1" * 64,
    "weights_uri": "/w.pt", "break_lock": True,
}


def config(**changes) -> RunConfig:
    """The resolved base configuration with ``changes`` (validated as a run would be)."""
    cfg = RunConfig(**{**BASE, **changes}).resolve()
    return cfg.replace(weights_sha256=changes.get("weights_sha256", "0" * 64))


def cases() -> list[tuple[str, str | None]]:
    """(option, --fill of the base configuration): the fill parameters under every fill."""
    return [(f, None) for f in FIELDS] + [(p, kind) for p in FILL_PARAMS
                                          for kind in FILL_PARAMETERS]


def reads(method: str, fill: str | None) -> tuple[str, ...]:
    return METHODS[method].options_read(fill)


def test_every_option_is_classified_once():
    groups = (COMMON_NAMES, placed(EXECUTION), RUN_NAMES, method_options())
    assert sorted(n for names in groups for n in names) == sorted(FIELDS)
    assert set(OTHER) == set(FIELDS), "every option needs a second value in OTHER"
    for m in METHOD_NAMES:  # what a method reads is a method option
        for fill in (None, *FILL_PARAMETERS):
            assert set(reads(m, fill)) <= set(method_options()), (m, fill)


def test_an_option_changes_exactly_the_hashes_of_the_methods_that_read_it():
    wrong = []
    for option, fill in cases():
        base = config(fill=fill)
        other = config(**{"fill": fill, option: OTHER[option]})
        for m in METHOD_NAMES:
            changed = base.config_hash(m) != other.config_hash(m)
            expected = option in COMMON_NAMES or option in reads(m, fill)
            if changed != expected:
                wrong.append((option, fill, m, changed))
        read_by_run = option in COMMON_NAMES + RUN_NAMES or any(option in reads(m, fill)
                                                         for m in METHOD_NAMES)
        if (base.config_hash() != other.config_hash()) != read_by_run:
            wrong.append((option, fill, "(run)", not read_by_run))
    assert wrong == [], "(option, --fill, method, hash changed) against the declarations"


def test_an_option_left_out_of_the_hash_at_its_default_keeps_older_hashes():
    """``hash_default=False`` (``--incremental-keep``, ``--ep-reward``, ``--ep-area-gain``,
    ``--step-core``, ``--osa-window``, ``--osa-strides``, added after outputs existed): at its
    default the key is the one without the option, so those outputs keep their hashes."""
    omitted = [o for o in declared_options().values() if not o.hash_default]
    assert sorted(o.name for o in omitted) == sorted(
        ["incremental_keep", "ep_reward", "ep_area_gain", "step_core", "osa_window",
         "osa_strides"])
    base = config()
    for m in METHOD_NAMES:
        for o in omitted:
            assert o.name not in base.result_key(m)
    assert "incremental_keep" in config(incremental_keep=0.2).result_key("aosa")
    assert "step_core" in config(step_core=300.0).result_key("step")
    assert "ep_lr" in config(ep_lr=0.1).result_key("fep")
    # --ep-lr's default became grid-dependent: hashed, so rows made before are recomputed
    assert "ep_lr" in base.result_key("ep") and "ep_lr" not in base.result_key("aosa")
    assert "ep_reward" in config(ep_reward="prob").result_key("step")
    assert "ep_area_gain" in config(ep_area_gain=16.0).result_key("fep")


def test_the_same_class_by_name_or_index_is_the_same_configuration():
    by_index = config(model="synth_small3d", size=None, num_frames=None, target="2")
    by_name = config(model="synth_small3d", size=None, num_frames=None, target="move_up")
    assert by_index.config_hash("aosa") == by_name.config_hash("aosa")
    assert by_index.config_hash("aosa") != config(model="synth_small3d", size=None,
                                                  num_frames=None, target="1").config_hash("aosa")


class Undeclared:
    """A registered method factory that declares nothing (as a plugin or a test might)."""

    def __init__(self, options=None) -> None:
        self.options = options


def test_a_method_that_declares_nothing_is_hashed_on_every_method_option(monkeypatch):
    monkeypatch.setitem(METHODS, "undeclared", Undeclared)
    assert hash_options("undeclared") == COMMON_NAMES + method_options()
    base = config(methods=("aosa", "undeclared"))
    for option in ("t_window", "layer", "stride", "fep_keep"):
        other = config(methods=("aosa", "undeclared"), **{option: OTHER[option]})
        assert base.config_hash("undeclared") != other.config_hash("undeclared"), option
    assert base.config_hash("undeclared") == config(
        methods=("aosa", "undeclared"), batch_size=3).config_hash("undeclared")


# --- The maps ---------------------------------------------------------------------------------

# The adjustment acts only on outlying estimates: 16 masks (stride 6) have none on this clip,
# 36 (stride 4) do. The path's points move the tiny network's map measurably in the voxels; in
# its layer, followed by a pooled linear head, the softmax alone bends the path (< 1e-4 here).
MAP_BASE = {"approx_adjust": dict(stride=4, box_size=8), "approx_steps": dict(approx_at="input")}
FRAMES = translating_clip(2, 1, frames=BASE["num_frames"], size=BASE["size"], seed=3)
FLOW = farneback_flow(FRAMES)
_SCORERS: dict[str, Scorer] = {}
_MAPS: dict[tuple[RunConfig, str], np.ndarray] = {}


def explain_maps(cfg: RunConfig, methods: tuple[str, ...]) -> list[np.ndarray]:
    """The methods' maps of the clip under ``cfg``, in one ``explain_clip`` (one engine), as
    the pipeline's tubes and explain stages compute them (metrics off: they never change a
    map)."""
    handler = cfg.handler()
    scorer = _SCORERS.setdefault(handler.share_tag(), handler.load_model())
    tubes = build_tubes(FLOW, cfg.stride, (cfg.box_size, cfg.box_size), cfg.topk)
    item = ClipTubes(ClipData(ClipRef("clip", "clip.avi"), FRAMES), tubes)
    settings = dataclasses.replace(cfg.explain_settings(), methods=methods, metrics=False)
    result = explain_clip(scorer, item, [get_method(m, cfg.method_options()) for m in methods],
                          settings)
    return [r.saliency for r in result.methods]


def explain_map(cfg: RunConfig, method: str) -> np.ndarray:
    """``method``'s map of the clip under ``cfg`` (:func:`explain_maps`), computed once."""
    if (cfg, method) not in _MAPS:
        _MAPS[cfg, method] = explain_maps(cfg, (method,))[0]
    return _MAPS[cfg, method]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: torch's threads only contend for the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("option,fill", [(o, f) for o, f in cases() if o in method_options()])
def test_an_option_changes_a_map_if_and_only_if_the_method_declares_it(option, fill,
                                                                     one_thread):
    base = config(**{"fill": fill, **MAP_BASE.get(option, {})})
    other = base.replace(**{option: OTHER[option]}).resolve()
    wrong = []
    for m in METHOD_NAMES:
        a, b = explain_map(base, m), explain_map(other, m)
        declared = option in reads(m, fill)
        # Unread: the same computation, bit for bit. Read: a real difference.
        changed = not np.array_equal(a, b)
        if changed and declared:
            changed = not np.allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(a).max()))
        hash_changed = base.config_hash(m) != other.config_hash(m)
        if changed != declared or hash_changed != declared:
            wrong.append((m, f"declared={declared}", f"map changed={changed}",
                          f"hash changed={hash_changed}"))
    assert wrong == [], f"--{option} (base --fill {fill})"


def test_a_method_left_its_own_score_measures_it_and_is_hashed_as_with_it_given(one_thread):
    """No ``--score``: AOSA-T measures the logit, every other method the probability; each
    method's map and hash are those of its own score given explicitly (so rows computed with
    it keep their hashes), also when methods of both kinds share one clip's engine."""
    assert {m: METHODS[m].default_score for m in METHOD_NAMES if
            METHODS[m].default_score != "prob"} == {"aosa_t": "logit"}
    default = config(score=None)
    for m in METHOD_NAMES:
        own = config(score=METHODS[m].default_score)
        assert default.config_hash(m) == own.config_hash(m), m
    assert default.config_hash("aosa_t") != config(score="prob").config_hash("aosa_t")
    methods = ("aosa_t", "aosa", "aosa_t")  # switching score back and forth on one engine
    together = explain_maps(default, methods)
    for m, saliency in zip(methods, together, strict=True):
        alone = explain_map(config(score=METHODS[m].default_score), m)
        np.testing.assert_array_equal(saliency, alone, err_msg=m)
    assert not np.allclose(together[0], explain_map(config(), "aosa_t"))


# --- The user guide ---------------------------------------------------------------------------


def marked_block(start: str, end: str) -> str | None:
    """The text between the markers in whichever of README.md and docs/*.md holds them (None:
    no file does); a second file with the same markers must hold the same text."""
    blocks = {}
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = path.read_text(encoding="utf-8")
        if start in text and end in text:
            blocks[path.name] = text[text.index(start) + len(start):text.index(end)].strip()
    assert len(set(blocks.values())) <= 1, f"{start} blocks differ between {sorted(blocks)}"
    return next(iter(blocks.values()), None)


def test_the_docs_state_what_enters_each_hash():
    block = marked_block("<!-- config-hash-table -->", "<!-- /config-hash-table -->")
    assert block is not None, "README.md or a docs/*.md file needs the config-hash-table markers"
    assert block == identity_table(), (
        "the config_hash table is stale: replace the block between the markers with "
        "the output of python -c 'from pipeline.config import identity_table; "
        "print(identity_table())'")


def test_the_table_names_real_flags():
    options = declared_options()
    for name in (*COMMON_NAMES, *method_options()):
        option = options[name]
        if option.flag:  # the real parser (Beam's and vidxai's flags) knows it
            check_known_args([option.flag] + ([] if option.type is bool else ["1"]))
    assert [n for n in COMMON_NAMES if not options[n].flag] == ["weights_sha256"]
