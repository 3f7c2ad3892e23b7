"""Grad-CAM: captum's LayerGradCam as an independent implementation, closed-form per-frame
weights, pass counts, hook hygiene, layer choice and errors."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn

import transforms.methods.gradcam  # noqa: F401  (registers "gradcam" and "gradcam_frame")
from models.registry import get_spec
from transforms.methods import get_method
from transforms.methods.base import MethodOptions
from transforms.methods.gradcam import GradCAM, GradCAMFrame, gradcam_map, upsample
from transforms.methods.layers import capture_layer
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer

T, H, W = 8, 16, 16


class SmallNet(nn.Module):
    """A 3D CNN whose head keeps position (pooling to 2 × 2 × 2), so gradients vary in t."""

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU())
        self.features = nn.Sequential(nn.Conv3d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool3d((2, 2, 2))
        self.head = nn.Linear(6 * 8, classes)
        with torch.no_grad():
            self.head.weight.mul_(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(self.stem(x))).flatten(1))


class KnownNet(nn.Module):
    """``features`` is a 1 × 1 × 1 convolution, the head a linear map of every activation.

    With the logit, ∂f/∂A = head.weight[target] viewed (C, T, H, W); with the probability p,
    ∂p_k/∂A = p_k (w_k − Σ_j p_j w_j).
    """

    def __init__(self, channels: int = 2, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Conv3d(3, channels, 1)
        self.head = nn.Linear(channels * T * H * W, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def spec_for(layer: str | None = "features"):
    return dataclasses.replace(get_spec("tiny"), name="small", gradcam_layer=layer)


def engine_for(net: nn.Module, x: torch.Tensor, target: int = 1, score: str = "prob",
               batch_size: int = 4, layer: str | None = "features",
               amp_dtype: torch.dtype | None = None) -> PerturbationEngine:
    scorer = Scorer(net, spec_for(layer), torch.device("cpu"), amp_dtype=amp_dtype)
    return PerturbationEngine(scorer, x, target, score=score, batch_size=batch_size)


def clip(seed: int = 1, shape: tuple[int, int, int] = (T, H, W)) -> torch.Tensor:
    return torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed))


def captum_gradcam(net: nn.Module, layer: nn.Module, x: torch.Tensor, target: int,
                   score: str = "prob") -> torch.Tensor:
    """captum's LayerGradCam (ReLU) upsampled trilinearly to the clip: (T, H, W)."""
    if score == "prob":
        def forward(inp):
            return torch.softmax(net(inp), dim=1)
    else:
        forward = net
    attr = LayerGradCam(forward, layer).attribute(x[None], target=target,
                                                  relu_attributions=True)
    return F.interpolate(attr, size=tuple(x.shape[1:]), mode="trilinear",
                         align_corners=False)[0, 0].detach()


def assert_no_hooks(*modules: nn.Module) -> None:
    for m in modules:
        for sub in m.modules():
            assert not sub._forward_hooks and not sub._backward_hooks
            assert not sub._forward_pre_hooks


# --- Pure functions -------------------------------------------------------------------------


def test_gradcam_map_global_and_per_frame_by_hand() -> None:
    acts = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]],
                         [[[1.0, 1.0]], [[1.0, 1.0]]]])  # (C=2, t=2, h=1, w=2)
    grads = torch.tensor([[[[1.0, 1.0]], [[-1.0, -1.0]]],
                          [[[2.0, 2.0]], [[2.0, 2.0]]]])
    # global: α = (0, 2) → 2 · A_1 = 2 everywhere
    assert torch.equal(gradcam_map(acts, grads), torch.full((2, 1, 2), 2.0))
    # per frame: α_0 = (1, −1), α_1 = (2, 2) → frame 0: A_0 + 2 = 3, 4; frame 1: −A_0 + 2 → 0
    expected = torch.tensor([[[3.0, 4.0]], [[0.0, 0.0]]])
    assert torch.equal(gradcam_map(acts, grads, per_frame=True), expected)


def test_gradcam_map_is_float32_for_half_inputs_and_checks_shapes() -> None:
    acts, grads = torch.rand(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    out = gradcam_map(acts.bfloat16(), grads.bfloat16())
    assert out.dtype == torch.float32
    assert torch.allclose(out, gradcam_map(acts.bfloat16().float(), grads.bfloat16().float()))
    with pytest.raises(ValueError, match="same shape|one shape"):
        gradcam_map(acts, grads[:, :1])
    with pytest.raises(ValueError, match="t, h, w"):
        upsample(torch.rand(2, 2), (4, 4, 4))


def test_upsample_is_trilinear_without_aligned_corners() -> None:
    cam = torch.rand(2, 3, 4)
    expected = F.interpolate(cam[None, None], size=(8, 9, 16), mode="trilinear",
                             align_corners=False)[0, 0]
    assert torch.equal(upsample(cam, (8, 9, 16)), expected)
    assert torch.allclose(upsample(torch.full((2, 2, 2), 3.0), (4, 8, 8)),
                          torch.full((4, 8, 8), 3.0))


# --- captum ---------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ["prob", "logit"])
def test_gradcam_equals_captum_layer_gradcam(score: str) -> None:
    net, x = SmallNet(), clip()
    engine = engine_for(net, x, target=2, score=score)
    sal = GradCAM().explain(engine, None).saliency
    ref = captum_gradcam(net, net.features, x, 2, score)
    assert sal.shape == (T, H, W) and sal.dtype == torch.float32 and sal.device.type == "cpu"
    assert sal.abs().max() > 0
    torch.testing.assert_close(sal, ref, atol=1e-6, rtol=1e-5)


def test_gradcam_on_tiny_video_net_equals_captum() -> None:
    spec = get_spec("tiny")
    torch.manual_seed(3)
    net = spec.build(spec.num_classes)
    x = clip(4, (spec.num_frames, spec.input_size, spec.input_size))
    engine = PerturbationEngine(Scorer(net, spec, torch.device("cpu")), x, 1, batch_size=4)
    sal = get_method("gradcam").explain(engine, None).saliency
    ref = captum_gradcam(net, net.features, x, 1)
    assert sal.shape == x.shape[1:] and sal.abs().max() > 0
    torch.testing.assert_close(sal, ref, atol=1e-6, rtol=1e-5)
    frame = get_method("gradcam_frame").explain(engine, None).saliency
    # global average pooling: gradients are constant over positions, so both conventions agree
    torch.testing.assert_close(frame, sal, atol=1e-6, rtol=1e-5)
    assert (engine.passes.forward, engine.passes.backward) == (3, 2)


# --- Per-frame weights ----------------------------------------------------------------------


def known_gradients(net: KnownNet, x: torch.Tensor, target: int, score: str) -> tuple:
    """A and ∂f/∂A of KnownNet in closed form, each (C, T, H, W)."""
    conv, head = net.features, net.head
    c = conv.out_channels
    acts = (torch.einsum("ci,ithw->cthw", conv.weight.view(c, 3), x)
            + conv.bias.view(c, 1, 1, 1))
    w = head.weight  # (K, C·T·H·W)
    if score == "logit":
        grad = w[target]
    else:
        p = torch.softmax(head(acts.reshape(1, -1)), dim=1)[0]
        grad = p[target] * (w[target] - p @ w)
    return acts.detach(), grad.view(c, *x.shape[1:]).detach()


@pytest.mark.parametrize("score", ["prob", "logit"])
def test_gradcam_frame_equals_closed_form_per_frame_weights(score: str) -> None:
    net, x = KnownNet(), clip(5)
    acts, grads = known_gradients(net, x, 0, score)
    alpha = grads.mean(dim=(2, 3))  # (C, T): one weight per channel and frame
    expected = torch.relu(sum(alpha[c][:, None, None] * acts[c] for c in range(acts.shape[0])))
    engine = engine_for(net, x, target=0, score=score)
    sal = GradCAMFrame().explain(engine, None).saliency  # layer at full resolution: no resize
    torch.testing.assert_close(sal, expected, atol=1e-6, rtol=1e-5)
    alpha_c = grads.mean(dim=(1, 2, 3))
    expected_global = torch.relu(torch.einsum("c,cthw->thw", alpha_c, acts))
    sal_global = GradCAM().explain(engine, None).saliency
    torch.testing.assert_close(sal_global, expected_global, atol=1e-6, rtol=1e-5)


def test_per_frame_and_global_weights_differ() -> None:
    """Target weights +1 on frames 0–3 and −1 on 4–7 of channel 0: the global weight is 0."""
    net, x = KnownNet(channels=1), clip(6)
    with torch.no_grad():
        net.features.weight.fill_(0.0)
        net.features.bias.fill_(1.0)  # A = 1 everywhere
        sign = torch.ones(T, H, W)
        sign[T // 2:] = -1.0
        net.head.weight.zero_()
        net.head.weight[0] = sign.flatten()
    engine = engine_for(net, x, target=0, score="logit")
    glob = GradCAM().explain(engine, None).saliency
    frame = GradCAMFrame().explain(engine, None).saliency
    assert torch.equal(glob, torch.zeros(T, H, W))
    expected = torch.zeros(T, H, W)
    expected[: T // 2] = 1.0
    torch.testing.assert_close(frame, expected)

    small, xs = SmallNet(), clip(7)  # a random network: the two conventions disagree too
    e = engine_for(small, xs, target=2)
    assert not torch.allclose(GradCAM().explain(e, None).saliency,
                              GradCAMFrame().explain(e, None).saliency, atol=1e-4)


# --- Passes, hooks, gradients ---------------------------------------------------------------


@pytest.mark.parametrize("method", [GradCAM, GradCAMFrame])
def test_one_forward_and_one_backward_per_clip_and_no_state_left(method) -> None:
    net, x = SmallNet(), clip()
    engine = engine_for(net, x)
    assert (engine.passes.forward, engine.passes.backward) == (1, 0)
    method().explain(engine, None)
    assert (engine.passes.forward, engine.passes.backward) == (2, 1)
    assert_no_hooks(net)
    assert not any(p.requires_grad for p in net.parameters())
    assert not x.requires_grad and x.grad is None


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_hooks_removed_after_an_exception_inside_the_call() -> None:
    net, x = SmallNet(), clip()
    engine = engine_for(net, x)
    net.pool = Exploding()  # after the layer: the forward fails while the hook is registered
    with pytest.raises(RuntimeError, match="boom"):
        GradCAM().explain(engine, None)
    assert_no_hooks(net)
    other = SmallNet()
    with pytest.raises(ValueError, match="token layouts"):  # raised inside the hook itself
        GradCAM(MethodOptions(layer="head")).explain(engine_for(other, x), None)
    assert_no_hooks(other)


def test_results_do_not_depend_on_batch_size() -> None:
    net, x = SmallNet(), clip()
    for method in (GradCAM, GradCAMFrame):
        maps = [method().explain(engine_for(net, x, batch_size=b), None).saliency
                for b in (1, 4, 8)]
        assert all(torch.equal(maps[0], m) for m in maps[1:])


# --- Layer choice and errors ----------------------------------------------------------------


def test_layer_option_overrides_the_network_default() -> None:
    net, x = SmallNet(), clip()
    engine = engine_for(net, x, target=0)
    sal = GradCAM(MethodOptions(layer="stem")).explain(engine, None).saliency
    torch.testing.assert_close(sal, captum_gradcam(net, net.stem, x, 0), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(sal, GradCAM().explain(engine, None).saliency, atol=1e-4)
    dotted = GradCAM(MethodOptions(layer="features.0")).explain(engine, None).saliency
    torch.testing.assert_close(dotted, captum_gradcam(net, net.features[0], x, 0),
                               atol=1e-6, rtol=1e-5)
    # with no default layer the option alone is enough
    engine = engine_for(net, x, target=0, layer=None)
    assert torch.equal(GradCAM(MethodOptions(layer="stem")).explain(engine, None).saliency, sal)


def test_missing_or_no_layer_is_a_clear_error() -> None:
    net, x = SmallNet(), clip()
    with pytest.raises(ValueError, match=r"'small' has no Grad-CAM layer.*--layer"):
        GradCAM().explain(engine_for(net, x, layer=None), None)
    with pytest.raises(ValueError, match=r"'small' has no layer 'features\.nope'"):
        GradCAMFrame(MethodOptions(layer="features.nope")).explain(engine_for(net, x), None)
    with pytest.raises(ValueError, match=r"'head' of network 'small'.*shape \(1, 3\)"):
        GradCAM().explain(engine_for(net, x, layer="head"), None)
    assert_no_hooks(net)


def test_registered_names() -> None:
    assert isinstance(get_method("gradcam"), GradCAM)
    method = get_method("gradcam_frame", MethodOptions(layer="stem"))
    assert isinstance(method, GradCAMFrame) and method.options.layer == "stem"
    assert not GradCAM.needs_tubes and GradCAM.uses_network


def test_bf16_autocast_is_close_to_fp32() -> None:
    net, x = SmallNet(), clip()
    ref = GradCAM().explain(engine_for(net, x), None).saliency
    engine = engine_for(net, x, amp_dtype=torch.bfloat16)
    sal = GradCAM().explain(engine, None).saliency
    assert sal.dtype == torch.float32 and sal.shape == ref.shape
    assert (sal - ref).abs().max() <= 0.05 * ref.abs().max()
    assert (engine.passes.forward, engine.passes.backward) == (2, 1)


def test_hook_ignores_other_threads_sharing_the_network() -> None:
    net, x = SmallNet(), clip()
    with torch.no_grad():
        expected = net(x[None])
    out: dict[str, torch.Tensor] = {}

    def other_thread():
        with torch.inference_mode():
            out["logits"] = net(x[None])

    with capture_layer(net.features, "features", "small") as capture:
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert capture.leaves == []
    torch.testing.assert_close(out["logits"], expected)
    assert_no_hooks(net)
