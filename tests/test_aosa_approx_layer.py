"""AOSA-approx with the expansion in a layer (``--approx-at layer``, the default).

Known answers: the spread of a layer's cells over voxels; at a layer that is the input itself
the estimates are the paper's (input) ones, bit for bit; where the network is linear after the
layer and the layer's cells see only their own voxels, the estimates are the exact occlusion
scores — also through a saturating nonlinearity, where the input's first-order term is not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from models.registry import get_spec
from models.tiny import TinyVideoNet
from tests.test_aosa_approx import SHAPE, at_input, random_clip, tubes_for
from transforms.methods.aosa import occlusion_scores
from transforms.methods.aosa_approx import APPROX_AT, cell_spread
from transforms.methods.base import MethodOptions, get_method
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer

CELL = (2, 8, 8)  # voxels per layer cell of the pooled networks: (8, 32, 32) → (4, 4, 4)


def engine_for(net: nn.Module, x: torch.Tensor, target: int = 1, score: str = "logit",
               batch_size: int = 8, layer: str | None = "features") -> PerturbationEngine:
    spec = dataclasses.replace(get_spec("tiny"), name="pooled", gradcam_layer=layer)
    return PerturbationEngine(Scorer(net, spec, torch.device("cpu")), x, target, score=score,
                              batch_size=batch_size)


class Squash(nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.tanh(3 * a)


class Pooled(nn.Module):
    """``features``: each cell of :data:`CELL` voxels averaged (then, with ``squash``, a
    saturating tanh: still cell-local); ``head``: a linear function of every cell (three
    classes)."""

    def __init__(self, squash: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.AvgPool3d(CELL), *([Squash()] if squash else []))
        cells = 3 * int(np.prod([s // c for s, c in zip(SHAPE[1:], CELL, strict=True)]))
        self.head = nn.Linear(cells, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(3, cells,
                                               generator=torch.Generator().manual_seed(seed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class AtInput(nn.Module):
    """A layer ``features`` that is the input itself, then the tiny network."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.net = TinyVideoNet(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(x))


def cellwise_clip(seed: int = 3) -> torch.Tensor:
    """(3, 8, 32, 32), constant within each cell of :data:`CELL`."""
    low = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(seed))
    return low.repeat_interleave(2, 1).repeat_interleave(8, 2).repeat_interleave(8, 3)


def cell_tubes() -> tuple[torch.Tensor, torch.Tensor]:
    """16 single masks, each one spatial cell over every frame: boxes (16, 8, 4), no partners."""
    boxes = torch.tensor([[[x, y, x + 8, y + 8]] * 8 for y in range(0, 32, 8)
                          for x in range(0, 32, 8)])
    return boxes, torch.zeros(16, 0, dtype=torch.int64)


def mask_scores(method: str, engine: PerturbationEngine, boxes, partners,
                **options) -> torch.Tensor:
    return get_method(method, MethodOptions(fill="mean", **options)).mask_scores(
        engine, boxes, partners).double()


# --- The spread of cells over voxels ---------------------------------------------------------


def test_cell_spread_known_answer_on_uneven_cells() -> None:
    values = torch.tensor([[[6.0, 3.0]]])  # (1, 1, 2) cells over (1, 1, 5) voxels: 3 + 2
    got = cell_spread(values, (1, 1, 5))
    np.testing.assert_allclose(got[0, 0].numpy(), [2, 2, 2, 1.5, 1.5])


def test_cell_spread_keeps_every_box_sum_of_whole_cells() -> None:
    values = torch.randn(2, 7, 7, generator=torch.Generator().manual_seed(0))
    got = cell_spread(values, (16, 224, 224))
    assert got.shape == (16, 224, 224) and got.dtype == torch.float64
    assert float(got.sum()) == pytest.approx(float(values.double().sum()), abs=1e-9)
    # the box of cells (t 1, y 2..3, x 4) is voxels 8..15, 64..127, 128..159
    box = got[8:16, 64:128, 128:160].sum()
    assert float(box) == pytest.approx(float(values[1, 2:4, 4].double().sum()), abs=1e-9)


def test_cell_spread_refuses_a_layer_finer_than_the_clip() -> None:
    with pytest.raises(ValueError, match="finer than the clip"):
        cell_spread(torch.zeros(2, 4, 4), (1, 4, 4))


# --- Known answers of the estimates ---------------------------------------------------------


def test_the_default_is_the_layer_expansion() -> None:
    assert APPROX_AT.default == "layer" and APPROX_AT.choices == ("layer", "input")
    assert "approx_at" in get_method("aosa_approx").options_read(None)
    assert "layer" in get_method("aosa_sgl_approx").options_read(None)


@pytest.mark.parametrize("steps", [0, 1, 3])
@pytest.mark.parametrize("adjust", [False, True])
def test_at_a_layer_that_is_the_input_the_estimates_are_the_papers(steps, adjust) -> None:
    tubes = tubes_for(8, 2)
    boxes, partners = torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners)
    options = {"approx_steps": steps, "approx_adjust": adjust, "fill": "local_mean",
               "fill_window": 12}
    net = AtInput()
    layer = get_method("aosa_approx", MethodOptions(**options)).mask_scores(
        engine_for(net, random_clip(), score="prob"), boxes, partners)
    paper = get_method("aosa_approx", at_input(**options)).mask_scores(
        engine_for(net, random_clip(), score="prob"), boxes, partners)
    torch.testing.assert_close(layer, paper, rtol=0, atol=1e-6)


def test_exact_where_the_network_is_linear_after_cell_local_layers() -> None:
    """Pooled (linear), a clip constant within cells, the mean fill: the modelled change of
    the layer (each cell by the share the mask covers) is the real one, the logit linear in
    it; every estimate is the exact score of occluding its mask (integrated masks, partial
    cells included)."""
    tubes = tubes_for(4, 2)
    boxes, partners = torch.from_numpy(tubes.boxes), torch.from_numpy(tubes.partners)
    engine = engine_for(Pooled(), cellwise_clip())
    exact = occlusion_scores(engine, boxes, partners, 0.0).double()
    got = mask_scores("aosa_approx", engine, boxes, partners)
    assert exact.std() > 0.1  # the masks differ
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-4)


def test_exact_through_a_saturating_layer_where_the_input_term_is_not() -> None:
    """tanh after the pooling: a mask of whole cells changes them to the fill's activations,
    which the layer's expansion models exactly; the input's first-order term does not."""
    boxes, partners = cell_tubes()
    engine = engine_for(Pooled(squash=True), cellwise_clip())
    exact = occlusion_scores(engine, boxes, partners, 0.0).double()
    layer = mask_scores("aosa_sgl_approx", engine, boxes, partners, approx_steps=0)
    paper = mask_scores("aosa_sgl_approx", engine, boxes, partners, approx_steps=0,
                        approx_at="input")
    torch.testing.assert_close(layer, exact, rtol=0, atol=1e-4)
    assert (paper - exact).abs().max() > 0.1


def test_the_layer_path_sums_to_the_whole_occlusion() -> None:
    """Σ over every voxel of the direction = Σ_cells ∂f/∂A · (A(μ) − A(V)) averaged over the
    path's midpoints: f(μ) − f(V) in the limit (the probability: a curved path)."""
    from transforms.methods.aosa_approx import layer_expansion, path_gradient

    engine = engine_for(Pooled(squash=True), random_clip(), score="prob")
    expansion = layer_expansion(engine, "features", 0.0)
    whole = float(engine.score(torch.zeros_like(engine.x)[None])[0]) - engine.base_score
    errors = []
    for steps in (1, 16):
        grad = path_gradient(expansion.start, expansion.end, expansion.grad_at, steps, 8)
        errors.append(abs(float(expansion.direction(grad).sum()) - whole))
    assert abs(whole) > 0.1 and errors[1] < 2e-4 * abs(whole) and errors[1] < errors[0] / 10


@pytest.mark.parametrize("steps,forwards,backwards", [(0, 4, 1), (1, 4, 1), (3, 6, 3)])
def test_passes_of_the_layer_expansion(steps, forwards, backwards) -> None:
    """The clean forward, the clip's and the fill's activations, one forward-and-backward per
    path point (0: the clip's point); backwards stop at the layer."""
    tubes = tubes_for(8, 2)
    engine = engine_for(TinyVideoNet(3), random_clip(), score="prob")
    get_method("aosa_approx", MethodOptions(approx_steps=steps)).explain(engine, tubes)
    assert (engine.passes.forward, engine.passes.backward) == (forwards, backwards)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_the_batch_size_does_not_change_the_layer_map(batch_size) -> None:
    tubes, net = tubes_for(8, 2), TinyVideoNet(3)
    maps = [get_method("aosa_approx", MethodOptions(approx_steps=3, approx_adjust=True))
            .explain(engine_for(net, random_clip(), score="prob", batch_size=b),
                     tubes).saliency for b in (batch_size, 8)]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=1e-6)


def test_a_network_without_a_layer_says_how_to_go_on() -> None:
    tubes = tubes_for(8, 2)
    engine = engine_for(TinyVideoNet(3), random_clip(), layer=None)
    with pytest.raises(ValueError, match=r"no Grad-CAM layer.*--layer.*--approx-at input"):
        get_method("aosa_approx").explain(engine, tubes)
    get_method("aosa_approx", at_input()).explain(engine, tubes)  # the paper's still runs


@pytest.mark.parametrize("methods,message", [
    (("aosa", "aosa_approx"), r"--methods aosa_approx: network 'flat' has no Grad-CAM layer; "
                              r"pass --layer with a convolutional block or --approx-at input"),
    (("gradcam",), r"--methods gradcam: network 'flat' has no Grad-CAM layer; pass --layer"),
])
def test_a_run_that_needs_a_layer_the_network_lacks_stops_before_it_starts(methods, message):
    """The driver checks (``pipeline.job.check_layer``) instead of dead-lettering every clip
    (transformers' networks have no Grad-CAM layer); the voxels' expansion needs none."""
    from pipeline.config import RunConfig
    from pipeline.job import check_layer

    flat = dataclasses.replace(get_spec("tiny"), name="flat", gradcam_layer=None)
    cfg = RunConfig(input="in", output="out", model="tiny", methods=methods).resolve()
    with pytest.raises(ValueError, match=message):
        check_layer(cfg, flat)
    check_layer(cfg.replace(approx_at="input", methods=("aosa_approx", "aosa")), flat)
    check_layer(cfg, get_spec("tiny"))  # it has one
