"""Incremental occlusion (``--incremental``): region rules, equal maps, and the approximate
mode's error bound.

No test here measures time (benchmarks/incremental.py does); every one compares the
incremental path with full forwards.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn
from torch.fx.interpreter import Interpreter

import models.i3d  # noqa: F401  (registers the networks)
import models.small3d  # noqa: F401
import models.tiny  # noqa: F401
import models.torchvision_video  # noqa: F401
from models.incremental import (
    IncrementalExecutor,
    Window,
    gather_boxes,
    pads_of,
    paste_boxes,
    propagate_region,
    threshold_region,
    trace,
    window_of,
)
from models.registry import build_network, get_spec
from pipeline.config import RunConfig
from pipeline.options import VidxaiOptions, config_from_options
from tests.test_tubes import translating_clip
from transforms.explain import ExplainSettings, explain_clip
from transforms.methods import get_method
from transforms.methods.base import MethodOptions
from transforms.methods.osa import osa_saliency
from transforms.perturbation import PerturbationEngine
from transforms.records import ClipData, ClipRef, ClipTubes
from transforms.scoring import Scorer
from transforms.tubes import tubes_from_frames

# --- Region rules ---------------------------------------------------------------------------


def conv_output_range(start: int, stop: int, kernel: int, stride: int, dilation: int,
                      pad_before: int, out_size: int) -> tuple[int, int]:
    """The per-axis rule the executor's region propagation implements (these tests'
    independent reference): output cells of a sliding window (conv / pool) whose input
    window meets [start, stop).

    Output o reads padded-free input cells ``o·s − p … o·s − p + d(k − 1)``.

    Args:
        start, stop: the changed input range of one axis (half-open; empty if stop <= start).
        kernel, stride, dilation: the window along that axis.
        pad_before: padding before the data on that axis.
        out_size: output length on that axis.

    Returns:
        ``(o0, o1)`` half-open, clipped to [0, out_size]; ``o0 == o1`` when nothing changes.
    """
    if stop <= start:
        return 0, 0
    o0 = max(0, math.ceil((start + pad_before - dilation * (kernel - 1)) / stride))
    o1 = min(out_size, (stop - 1 + pad_before) // stride + 1)
    return (o0, o1) if o1 > o0 else (0, 0)


def test_conv_output_range_known_answers():
    # k 3, s 2, p 1: output o reads input rows 2o − 1 … 2o + 1. Rows [10, 20) reach o = 5
    # (rows 9–11) through o = 10 (rows 19–21); o = 4 reads 7–9, o = 11 reads 21–23.
    assert conv_output_range(10, 20, 3, 2, 1, 1, 56) == (5, 11)
    # r3d_18's stem, k 7, s 2, p 3: rows [0, 16) reach o = 0 … 9 (o = 9 reads 15–21).
    assert conv_output_range(0, 16, 7, 2, 1, 3, 56) == (0, 10)
    # Clipped at the end: k 3, s 1, p 1 on 8 rows, rows [6, 8) reach 5, 6, 7.
    assert conv_output_range(6, 8, 3, 1, 1, 1, 8) == (5, 8)
    # A 1x1 stride-2 shortcut never reads odd rows: row 3 changes nothing.
    assert conv_output_range(3, 4, 1, 2, 1, 0, 4) == (0, 0)
    # Dilation 2, k 3, p 2: o reads o − 2, o, o + 2; row 5 reaches 3, 5, 7.
    assert conv_output_range(5, 6, 3, 1, 2, 2, 10) == (3, 8)
    assert conv_output_range(4, 4, 3, 1, 1, 1, 10) == (0, 0)


@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    ((3, 7, 7), (1, 2, 2), (1, 3, 3), (1, 1, 1)),
    ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1)),
    ((1, 1, 1), (2, 2, 2), (0, 0, 0), (1, 1, 1)),
    ((3, 3, 3), (1, 1, 1), (2, 2, 2), (2, 2, 2)),
])
def test_region_rule_contains_every_change_of_a_full_forward(kernel, stride, padding, dilation):
    """Independent check: perturb a box, difference two full forwards of the layer, and every
    changed output lies in the propagated region, whose bounding box is the per-axis rule."""
    conv = nn.Conv3d(2, 3, kernel, stride, padding, dilation).eval()
    x = torch.randn(1, 2, 9, 20, 20)
    box = (slice(2, 5), slice(6, 11), slice(13, 20))
    y = x.clone()
    y[(0, slice(None), *box)] += torch.randn(2, 3, 5, 7)
    with torch.no_grad():
        changed = (conv(y) != conv(x)).any(1)[0]  # (T', H', W')
        win = window_of(conv, x.shape)
        region = torch.zeros(1, 1, *x.shape[2:])
        region[(0, 0, *box)] = 1
        out = propagate_region(region, win)[0, 0] > 0
    assert out.shape == changed.shape
    assert not (changed & ~out).any()
    for axis, sl in enumerate(box):
        rng = conv_output_range(sl.start, sl.stop, kernel[axis], stride[axis], dilation[axis],
                                padding[axis], out.shape[axis])
        hit = out.any(dim=tuple(a for a in range(3) if a != axis)).nonzero().flatten()
        assert (int(hit[0]), int(hit[-1]) + 1) == rng


def test_same_padding_layers_have_their_asymmetric_geometry():
    conv = models.i3d.SameConv3d(3, 4, (7, 7, 7), (2, 2, 2))
    win = window_of(conv, (1, 3, 16, 64, 64))
    assert isinstance(win, Window)
    assert (win.pad_before, win.pad_after) == ((2, 2, 2), (3, 3, 3))
    pool = models.i3d.SameMaxPool3d((1, 3, 3), (1, 2, 2))
    win = window_of(pool, (1, 3, 8, 32, 32))
    assert win.pad_value == float("-inf") and (win.pad_before, win.pad_after) == (
        (0, 0, 0), (0, 1, 1))


def random_bn(net: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics, so every layer's values matter."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if hasattr(m, "running_mean") and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


class Recorder(Interpreter):
    """A plain full forward that keeps a copy of every node's value."""

    def __init__(self, gm, store: dict) -> None:
        super().__init__(gm)
        self.store = store

    def run_node(self, n):
        out = super().run_node(n)
        self.store[n.name] = out.clone() if torch.is_tensor(out) else out
        return out


def test_every_node_changes_only_inside_its_region():
    """Per node of r3d_18: full forwards of the occluded and the clean clip differ only where
    the executor's region says they may (the region rule checked on a whole network)."""
    net = random_bn(build_network(get_spec("r3d_18"), seed=0))
    x = torch.randn(1, 3, 8, 48, 48)
    batch = x.repeat(2, 1, 1, 1, 1)
    batch[0, :, :, 4:14, 30:40] = 0.0
    batch[1, :, 2:5, 20:26, 3:9] = 1.0
    with torch.inference_mode():
        ex = IncrementalExecutor(net, x)
        _, values = ex.run(batch, keep_values=True)
        gm = trace(net)
        full, clean = {}, {}
        for store, inp in ((full, batch), (clean, x)):
            Recorder(gm, store).run(inp)
    checked = 0
    for name, value in values.items():
        if value.region is None or not torch.is_tensor(full.get(name)):
            continue
        diff = (full[name] - clean[name]).abs().amax(dim=1, keepdim=True)
        outside = diff[value.region == 0]
        assert outside.numel() == 0 or float(outside.max()) <= 1e-5 * float(diff.max()) + 1e-6
        checked += 1
    assert checked > 20


# --- Equal maps -----------------------------------------------------------------------------

NETWORKS = {  # name: (frames, size, anchor stride, box, score)
    "tiny": (8, 32, 8, 16, "prob"),
    "synth_small3d": (16, 64, 16, 16, "prob"),
    # 48 px: at 32 px two 8-px tubes reach over 60 % of the stem's 4 × 4 tiles (whole-clip
    # tiles in T), every layer runs in full and nothing would be saved to check.
    "r3d_18": (8, 48, 16, 8, "logit"),
    "r2plus1d_18": (8, 48, 16, 8, "logit"),
    "mc3_18": (8, 48, 16, 8, "logit"),
    "i3d_kinetics400": (8, 48, 24, 8, "logit"),
}


def network_scorer(name: str, amp: torch.dtype | None = None) -> Scorer:
    spec = get_spec(name)
    net = build_network(spec, seed=0)
    if name == "synth_small3d":
        spec.load_default_weights(net, None)
    return Scorer(random_bn(net) if name != "synth_small3d" else net, spec,
                  torch.device("cpu"), amp)


def assert_maps_close(full: torch.Tensor, inc: torch.Tensor, rtol: float = 1e-4) -> None:
    scale = float(full.abs().max())
    assert scale > 0
    assert float((full - inc).abs().max()) <= rtol * scale + 1e-6


@pytest.mark.parametrize("name", list(NETWORKS))
def test_aosa_maps_equal_full_forward_maps(name):
    frames, size, stride, box, score = NETWORKS[name]
    scorer = network_scorer(name)
    clip = translating_clip(2, 1, frames=frames, size=size, seed=3)
    tubes = tubes_from_frames(clip, stride, (box, box), 1)
    x = scorer.to_input(clip)
    maps, engines = {}, {}
    for incremental in (False, True):
        engine = PerturbationEngine(scorer, x, 1, score, batch_size=4, incremental=incremental)
        maps[incremental] = get_method("aosa").explain(engine, tubes).saliency
        engines[incremental] = engine
    assert_maps_close(maps[False], maps[True])
    assert engines[True].passes.forward == engines[False].passes.forward
    executor = engines[True]._logits.executor
    assert 0 < executor.macs.done < executor.macs.full


@pytest.mark.parametrize("name", ["tiny", "synth_small3d", "r3d_18", "i3d_kinetics400"])
def test_osa_window_maps_equal_full_forward_maps(name):
    frames, size, _, _, score = NETWORKS[name]
    scorer = network_scorer(name)
    x = scorer.to_input(translating_clip(1, 2, frames=frames, size=size, seed=4))
    cut = 2 if name in ("tiny", "synth_small3d") else 1  # fewer windows on the big networks
    window = (frames // cut, size // 4, size // 4)
    strides = (frames // cut, size // 4, size // 4)
    maps = {}
    for incremental in (False, True):
        engine = PerturbationEngine(scorer, x, 0, score, batch_size=8, incremental=incremental)
        maps[incremental] = osa_saliency(x, engine.score, 8, engine.base_score, window,
                                         strides)
    assert_maps_close(maps[False], maps[True])


def test_bf16_autocast_scores_stay_close():
    scorer = network_scorer("synth_small3d", torch.bfloat16)
    x = scorer.to_input(translating_clip(2, 0, frames=16, size=64, seed=5))
    batch = x.repeat(3, 1, 1, 1, 1)
    batch[:, :, :, 10:26, 20:36] = 0.0
    batch[1, :, :8] = 0.0
    with torch.inference_mode():
        full = scorer.logits(batch)
        inc = scorer.incremental(x)(batch)
    assert inc.dtype == torch.float32
    assert float((full - inc).abs().max()) <= 0.05 * float(full.abs().max())


def test_unchanged_and_fully_changed_clips():
    scorer = network_scorer("tiny")
    x = scorer.to_input(translating_clip(1, 1, frames=8, size=32, seed=6))
    batch = torch.stack([x, torch.zeros_like(x), x])
    batch[2, :, 3, 5, 7] = 2.0  # one voxel
    with torch.inference_mode():
        torch.testing.assert_close(scorer.incremental(x)(batch), scorer.logits(batch),
                                   rtol=1e-5, atol=1e-5)


class Untraceable(nn.Module):
    """Control flow on a value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if float(y.mean()) > 100:
            y = -y
        return self.fc(y.mean(dim=(2, 3, 4)))


def test_untraceable_network_falls_back_to_full_forwards_with_a_warning(caplog):
    with pytest.raises(TypeError, match="Untraceable is not"):
        trace(Untraceable())
    scorer = Scorer(Untraceable(), get_spec("tiny"), torch.device("cpu"))
    x = torch.randn(3, 8, 32, 32)
    batch = x.repeat(2, 1, 1, 1, 1)
    batch[0, :, :, :8, :8] = 0
    full = PerturbationEngine(scorer, x, 0, batch_size=2).score(batch)
    with caplog.at_level(logging.WARNING):
        inc = PerturbationEngine(scorer, x, 0, batch_size=2, incremental=True).score(batch)
    assert "full forwards" in caplog.text
    torch.testing.assert_close(inc, full)
    # An approximation asked for is never replaced by exact scores: the error names the network.
    with pytest.raises(TypeError, match="Untraceable is not"):
        PerturbationEngine(scorer, x, 0, batch_size=2).score(batch, keep=0.9)


# --- Wiring ---------------------------------------------------------------------------------


def test_option_reaches_the_engine_and_leaves_the_hash_alone():
    options = VidxaiOptions(["--input", "in", "--output", "out", "--incremental"])
    cfg = config_from_options(options)
    assert cfg.incremental and cfg.explain_settings().incremental
    cfg = cfg.replace(weights_sha256="0" * 64)
    assert cfg.config_hash() == cfg.replace(incremental=False).config_hash()
    assert not RunConfig(input="in", output="out").incremental


def test_explain_clip_with_incremental_equals_without():
    scorer = network_scorer("tiny")
    frames = translating_clip(2, 1, frames=8, size=32, seed=7)
    tubes = tubes_from_frames(frames, 8, (16, 16), 3)
    item = ClipTubes(ClipData(ClipRef("c0", "v.avi"), frames), tubes)
    methods = [get_method("aosa")]
    results = {}
    for incremental in (False, True):
        settings = ExplainSettings(methods=("aosa",), target="predicted",
                                   fixed_target=None, batch_size=8, metric_steps=4,
                                   incremental=incremental)
        results[incremental] = explain_clip(scorer, item, methods, settings)
    for full, inc in zip(results[False].methods, results[True].methods, strict=True):
        assert_maps_close(torch.from_numpy(full.saliency), torch.from_numpy(inc.saliency))
        assert full.forward_passes == inc.forward_passes
        assert full.metrics.deletion_auc == pytest.approx(inc.metrics.deletion_auc, abs=1e-5)


# --- Approximate mode (projective-field thresholding) -----------------------------------------


@pytest.mark.parametrize(("keep", "kept"), [(1.0, [1, 1, 1, 1, 0]), (0.5, [1, 0, 0, 0, 0]),
                                            (0.6, [1, 1, 0, 0, 0]), (0.95, [1, 1, 1, 1, 0])])
def test_threshold_region_keeps_the_largest_changes_known_answers(keep, kept):
    change = torch.tensor([5.0, 3.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 1, 5)
    assert threshold_region(change, keep).flatten().tolist() == kept  # ties at the cut: kept


class TwoConv(nn.Module):
    """conv → ReLU → conv → global mean → linear: small enough for a hand-derived bound."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv3d(4, 5, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv2(self.relu(self.conv1(x)))).flatten(1))


def occluded_batch(x: torch.Tensor, seed: int) -> torch.Tensor:
    """(6, 3, T, H, W): ``x`` with 1-3 random boxes set to 0 per clip."""
    g = torch.Generator().manual_seed(seed)
    batch = x.expand(6, -1, -1, -1, -1).clone()
    _, t, h, w = x.shape
    for b in range(6):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            y0, x0 = (int(v) for v in torch.randint(0, h - 8, (2,), generator=g))
            batch[b, :, :, y0:y0 + 8, x0:x0 + 8] = 0.0
    return batch


@pytest.mark.parametrize("keep", [0.9, 0.5])
def test_approximate_mode_stays_within_its_error_bound(keep):
    """With keep < 1 only conv2 can be wrong (conv1 is exact; its output's dropped cells carry at
    most (1 − keep) of its change mass M1), and ReLU is 1-Lipschitz, so
    Σ |conv2 error| ≤ L2 · (1 − keep) · M1 with L2 = max_c Σ_{o,k} |w2[o, c, k]|; the mean over
    the n cells and the linear head give |logit error| ≤ max |W| · Σ |conv2 error| / n."""
    torch.manual_seed(0)
    net = TwoConv().eval()
    x = torch.randn(3, 8, 32, 32)
    batch = occluded_batch(x, seed=1)
    with torch.inference_mode():
        full = net(batch)
        exact = IncrementalExecutor(net, x[None])(batch)
        approx_ex = IncrementalExecutor(net, x[None], keep=keep)
        approx = approx_ex(batch)
        m1 = (net.conv1(batch) - net.conv1(x[None])).abs().sum(dim=(1, 2, 3, 4))  # (B,)
    l2 = float(net.conv2.weight.detach().abs().sum(dim=(0, 2, 3, 4)).max())
    n = 8 * 32 * 32
    bound = float(net.fc.weight.detach().abs().max()) * l2 * (1 - keep) * m1 / n  # (B,)
    error = (approx - full).abs().amax(1)
    assert torch.all(error <= bound + 1e-5), (error, bound)  # 1e-5: float32 rounding
    if keep <= 0.5:  # the approximation is in use (at 0.9 the tiles recompute most cells)
        assert float(error.max()) > 1e-5  # float32 rounding alone stays near 1e-7
    torch.testing.assert_close(exact, full, rtol=1e-5, atol=1e-5)
    for name, dropped, total in approx_ex.dropped:  # every layer's cut, as documented
        assert dropped <= (1 - keep) * total * (1 + 1e-6) + 1e-6, name


def test_keep_one_is_the_exact_executor():
    torch.manual_seed(0)
    net = TwoConv().eval()
    x = torch.randn(3, 8, 32, 32)
    batch = occluded_batch(x, seed=2)
    with torch.inference_mode():
        a = IncrementalExecutor(net, x[None])(batch)
        b = IncrementalExecutor(net, x[None], keep=1.0)(batch)
    assert torch.equal(a, b)


def test_keep_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="keep share"):
        IncrementalExecutor(TwoConv().eval(), torch.zeros(1, 3, 8, 32, 32), keep=0.0)


def test_engine_scores_approximately_only_when_asked():
    scorer = network_scorer("tiny")
    x = scorer.to_input(translating_clip(1, 1, frames=8, size=32, seed=6))
    engine = PerturbationEngine(scorer, x, 0)
    batch = x[None].clone()
    batch[0, :, :, :8, :8] = 0.0
    exact = engine.score(batch)
    assert engine._logits is None and not engine._approximate  # full forwards
    engine.score(batch, keep=0.7)
    executor = engine._approximate[0.7].executor
    assert executor.keep == 0.7 and executor.dropped
    with pytest.raises(ValueError, match="clean clip"):
        list(engine.perturb([torch.zeros(1, 8, 32, 32, dtype=torch.bool)], 0.0,
                            source=batch[0], keep=0.7))
    assert torch.equal(engine.score(batch), exact)  # the metrics' scores stay exact


def test_incremental_keep_option_reaches_the_tube_methods_and_stays_close():
    """``--incremental-keep`` through the method: on the trained synthetic network an AOSA map
    at keep 0.9 differs from the exact one (the approximation is on) but ranks the voxels the
    same way (Spearman ≥ 0.99, the issue's bar; the benchmark measures it on r3d_18), and every
    layer's cut drops at most 1 − keep of its change."""
    frames, size, stride, box, score = NETWORKS["synth_small3d"]
    scorer = network_scorer("synth_small3d")
    clip = translating_clip(2, 1, frames=frames, size=size, seed=3)
    tubes = tubes_from_frames(clip, stride // 2, (box, box), 3)
    x = scorer.to_input(clip)
    maps = {}
    for keep in (1.0, 0.9):
        engine = PerturbationEngine(scorer, x, 1, score, batch_size=8)
        method = get_method("aosa", MethodOptions(incremental_keep=keep))
        maps[keep] = method.explain(engine, tubes).saliency.flatten()
    executor = engine._approximate[0.9].executor
    assert executor.dropped and all(d <= 0.1 * t * (1 + 1e-6) + 1e-6
                                    for _, d, t in executor.dropped)
    assert not torch.equal(maps[1.0], maps[0.9])
    assert spearmanr(maps[1.0].numpy(), maps[0.9].numpy()).statistic >= 0.99


@pytest.mark.parametrize("slice_bytes", [0, 1 << 40], ids=["slices", "indexing"])
@pytest.mark.parametrize("pad_value", [0.0, float("-inf")])
def test_gather_boxes_reads_the_pad_value_outside_known_answers(pad_value, slice_bytes,
                                                                monkeypatch):
    """Boxes inside, across each border and past both ends of an axis: every cell equals the
    same box cut from the input padded by ``F.pad`` (an independent reference), whether the
    boxes are copied one slice at a time or by one indexing call."""
    monkeypatch.setattr(models.incremental, "SLICE_BOX_BYTES", slice_bytes)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 6, 7, generator=g)
    span = (4, 5, 9)  # W span 9 > 7: a box can stick out at both ends at once
    corners = torch.tensor([[0, 0, 0], [0, 1, -1], [0, -2, -2], [0, 2, -1], [0, -1, 0]])
    samples = torch.tensor([0, 1, 1, 0, 1])
    m = 3
    padded = F.pad(x, [m] * 6, value=pad_value)
    got = gather_boxes(x, samples, corners, span, pad_value)
    for i, (s, (t, y, w)) in enumerate(zip(samples.tolist(), corners.tolist(), strict=True)):
        want = padded[s, :, t + m:t + m + span[0], y + m:y + m + span[1], w + m:w + m + span[2]]
        assert torch.equal(got[i], want), i


@pytest.mark.parametrize("kernel,stride,dilation", [
    ((7, 7, 7), (2, 2, 2), (1, 1, 1)), ((1, 3, 3), (1, 2, 2), (1, 1, 1)),
    ((3, 3, 3), (1, 1, 1), (2, 3, 1)), ((1, 1, 1), (2, 3, 2), (1, 1, 1)),
    ((2, 2, 2), (3, 3, 3), (1, 1, 1))])
def test_propagated_region_equals_a_float_max_pool(kernel, stride, dilation):
    """The uint8 window reduction against PyTorch's max-pool of the padded region."""
    g = torch.Generator().manual_seed(4)
    region = (torch.rand(2, 1, 9, 17, 20, generator=g) > 0.93).float()
    win = Window(kernel, stride, dilation, (1, 2, 0), (2, 1, 3), 0.0, 1, nn.Identity())
    want = F.max_pool3d(F.pad(region, pads_of(win)), kernel, stride, 0, dilation)
    assert torch.equal(propagate_region(region, win), want)


@pytest.mark.parametrize("slice_bytes", [0, 1 << 40], ids=["slices", "indexing"])
def test_paste_boxes_writes_each_box_and_nothing_else(slice_bytes, monkeypatch):
    monkeypatch.setattr(models.incremental, "SLICE_BOX_BYTES", slice_bytes)
    g = torch.Generator().manual_seed(5)
    out = torch.randn(3, 4, 5, 8, 9, generator=g).contiguous(
        memory_format=torch.channels_last_3d)
    want = out.clone()
    samples, corners = torch.tensor([2, 0, 2]), torch.tensor([[0, 0, 0], [1, 4, 5], [1, 5, 6]])
    patches = torch.randn(3, 4, 3, 3, 3, generator=g)
    for s, (t, y, x), patch in zip(samples.tolist(), corners.tolist(), patches, strict=True):
        want[s, :, t:t + 3, y:y + 3, x:x + 3] = patch
    paste_boxes(out, samples, corners, patches)
    assert torch.equal(out, want)


def test_pool_then_pointwise_conv_runs_on_the_pools_tiles_and_counts_its_macs():
    """I3D's max-pool → 1 x 1 x 1 conv branch is one chain (the pool's output is never made
    whole); every conv's MACs are still counted: a clip changed everywhere computes all of
    them, an unchanged one none of those before the global pooling."""
    scorer = network_scorer("i3d_kinetics400")
    frames, size = NETWORKS["i3d_kinetics400"][:2]
    x = scorer.to_input(translating_clip(1, 1, frames=frames, size=size, seed=6))
    with torch.inference_mode():
        logits = scorer.incremental(x)
        ex = logits.executor
        fused = [[p.name for p in chain if p in ex._windows]
                 for node, chain in ex._chains.items() if "branch_3_max_pool" in node.name]
        assert fused and all(len(f) == 1 and f[0].endswith("conv3d_0b_1x1_conv")
                             for f in fused)
        logits(x[None])
        unchanged = ex.macs.done  # only the classifier after the global pooling
        assert unchanged < 1e-3 * ex.macs.full
        batch = x[None] + 1.0
        torch.testing.assert_close(logits(batch), scorer.logits(batch), rtol=1e-4, atol=1e-4)
        assert ex.macs.done - unchanged == ex.macs.full // 2
