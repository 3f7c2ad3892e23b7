"""Each stage's DoFn on its own, in a real Beam pipeline (TestPipeline + assert_that).

Every test runs on FnApiRunner (Beam 2.77's default DirectRunner first tries to download the
Prism binary, which fails offline).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from apache_beam import Create, ParDo
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to, is_empty

from tests.conftest import write_video
from tests.test_tubes import translating_clip
from transforms.deadletter import ERRORS
from transforms.decode import DecodeFn
from transforms.explain import ExplainFn, ExplainSettings
from transforms.flow import FlowFn
from transforms.methods.base import METHODS, Explanation, Method
from transforms.model_handler import ModelConfig, VideoModelHandler
from transforms.records import ClipData, ClipFlow, ClipRef, ClipResult, ClipTubes
from transforms.tubes import TubesFn, tubes_from_frames


def pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner="FnApiRunner")


def ref(name: str, label: int | None = None) -> ClipRef:
    return ClipRef(clip_id=name, video=name, label=label)


def test_decode_fn_outputs_frames_and_dead_letters(tmp_path):
    clip = translating_clip(1, 0, frames=10, size=32, seed=0)
    good = str(write_video(tmp_path / "good.avi", clip))
    missing = str(tmp_path / "missing.avi")

    def check_ok(items):
        assert len(items) == 1
        assert items[0].ref.video == good and items[0].frames.shape == (8, 24, 24, 3)
        assert items[0].frames.dtype == np.uint8

    with pipeline() as p:
        out = (p | Create([ClipRef("a", good), ClipRef("b", missing)])
               | ParDo(DecodeFn(8, 24, 1.0, 1)).with_outputs(ERRORS, main="ok"))
        assert_that(out.ok, check_ok, label="ok")
        assert_that(out[ERRORS] | "Stage" >> _map(lambda e: (e.clip_id, e.stage,
                                                             "does not exist" in e.message)),
                    equal_to([("b", "decode", True)]), label="errors")


def _map(fn):
    from apache_beam import Map

    return Map(fn)


def test_flow_fn_measures_a_known_translation():
    frames = translating_clip(2, 1, frames=6, size=48, seed=1)

    def check(items):
        (item,) = items
        inner = item.flow[:, 12:36, 12:36]  # away from the borders
        assert item.flow.shape == (5, 48, 48, 2)
        np.testing.assert_allclose(np.median(inner[..., 0]), 2.0, atol=0.25)
        np.testing.assert_allclose(np.median(inner[..., 1]), 1.0, atol=0.25)

    with pipeline() as p:
        out = (p | Create([ClipData(ref("c"), frames)])
               | ParDo(FlowFn()).with_outputs(ERRORS, main="ok"))
        assert_that(out.ok, check, label="ok")
        assert_that(out[ERRORS], is_empty(), label="errors")


def test_tubes_fn_builds_n_masks_and_dead_letters_bad_flow():
    frames = translating_clip(1, 1, frames=6, size=32, seed=2)
    flow = np.zeros((5, 32, 32, 2), dtype=np.float32)
    bad = ClipFlow(ClipData(ref("bad"), frames), np.zeros((5, 32, 32), dtype=np.float32))

    def check(items):
        (item,) = items
        assert isinstance(item, ClipTubes) and item.tubes.num_masks == 16  # (32 / 8)²
        assert item.tubes.partners.shape == (16, 2)

    with pipeline() as p:
        out = (p | Create([ClipFlow(ClipData(ref("good"), frames), flow), bad])
               | ParDo(TubesFn(8, 16, 2)).with_outputs(ERRORS, main="ok"))
        assert_that(out.ok, check, label="ok")
        assert_that(out[ERRORS] | "Ids" >> _map(lambda e: (e.clip_id, e.stage)),
                    equal_to([("bad", "tubes")]), label="errors")


class _FailsOnLabel3(Method):
    """Test method: a constant map, but raises on clips labelled 3."""

    name = "fails_on_label_3"

    def explain(self, engine, tubes):
        if engine.target == 3:
            raise ValueError("injected failure")
        return Explanation(torch.ones(engine.frame_shape))


@pytest.fixture
def failing_method(monkeypatch):
    monkeypatch.setitem(METHODS, _FailsOnLabel3.name, _FailsOnLabel3)
    return _FailsOnLabel3.name


def test_explain_fn_emits_whole_results_or_one_error(failing_method):
    """All-or-nothing: the clip whose second method fails yields an error and no result, even
    though its first method (AOSA) had succeeded."""
    clips = []
    for i, label in enumerate((1, 3, 2)):
        frames = translating_clip(1, 0, frames=8, size=32, seed=i)
        clips.append(ClipTubes(ClipData(ref(f"clip{i}", label), frames),
                               tubes_from_frames(frames, 8, (16, 16), 2)))
    handler = VideoModelHandler(ModelConfig("tiny"), device="cpu")
    settings = ExplainSettings(methods=("aosa", failing_method), target="label",
                               fixed_target=None, batch_size=4, metric_steps=4)

    def check(results):
        assert sorted(r.ref.clip_id for r in results) == ["clip0", "clip2"]
        for r in results:
            assert isinstance(r, ClipResult) and r.target_source == "label"
            assert [m.method for m in r.methods] == ["aosa", failing_method]
            aosa = r.methods[0]
            assert aosa.saliency.shape == (8, 32, 32)
            assert aosa.forward_passes == 16 + 1 and aosa.metrics.forward_passes == 8
            assert r.methods[1].forward_passes == 1  # only the shared clean forward

    with pipeline() as p:
        out = (p | Create(clips)
               | ParDo(ExplainFn(handler, settings)).with_outputs(ERRORS, main="ok"))
        assert_that(out.ok, check, label="ok")
        assert_that(out[ERRORS] | "Ids" >> _map(lambda e: (e.clip_id, e.stage, e.message)),
                    equal_to([("clip1", "explain", "injected failure")]), label="errors")


class _Warns(Method):
    """A map with a warning on clips labelled 2 (as ``ep`` warns when its masks miss their
    areas)."""

    name = "test_warns"

    def explain(self, engine, tubes):
        warnings = ("the masks cover 0.97 of the clip",) if engine.target == 2 else ()
        return Explanation(torch.ones(engine.frame_shape), warnings)


def test_explain_fn_passes_a_methods_warnings_on_and_counts_them(monkeypatch):
    from apache_beam.metrics.metric import MetricsFilter

    monkeypatch.setitem(METHODS, _Warns.name, _Warns)
    clips = []
    for i, label in enumerate((1, 2, 2)):
        frames = translating_clip(1, 0, frames=8, size=32, seed=i)
        clips.append(ClipTubes(ClipData(ref(f"clip{i}", label), frames), None))
    handler = VideoModelHandler(ModelConfig("tiny"), device="cpu")
    settings = ExplainSettings(methods=(_Warns.name,), target="label", fixed_target=None,
                               batch_size=4, metric_steps=2)

    def check(results):
        warned = {r.ref.clip_id: r.methods[0].warnings for r in results}
        assert warned == {"clip0": (), "clip1": ("the masks cover 0.97 of the clip",),
                          "clip2": ("the masks cover 0.97 of the clip",)}

    p = pipeline()
    out = p | Create(clips) | ParDo(ExplainFn(handler, settings)).with_outputs(ERRORS, main="ok")
    assert_that(out.ok, check, label="ok")
    result = p.run()
    result.wait_until_finish()
    counts = result.metrics().query(MetricsFilter().with_name("method_warnings"))["counters"]
    assert sum(c.committed for c in counts) == 2
