"""3D Grad-CAM: class activation maps of a convolutional layer weighted by its gradients.

Two conventions exist for video networks (Grad-CAM: Selvaraju et al., ICCV 2017, extended to
3-D activations); both are offered:

``gradcam`` — one weight per channel (captum ``LayerGradCam``, pytorch-grad-cam, torchcam)::

    α_c = mean_{t,y,x} ∂f/∂A_c(t, y, x),        S(t, y, x) = ReLU(Σ_c α_c A_c(t, y, x))

``gradcam_frame`` — one weight per channel and layer frame (as the STEP authors' code, for
Wang et al. 2021, and mmaction2 compute it)::

    α_{c,t} = mean_{y,x} ∂f/∂A_c(t, y, x),      S(t, y, x) = ReLU(Σ_c α_{c,t} A_c(t, y, x))

A (C, t, h, w) are the activations of the layer for the clip and f is the engine's score: the
softmax probability of the target by default (as the AOSA paper), its logit with
``--score logit``. The map (t, h, w) is upsampled to the clip's (T, H, W) with trilinear
interpolation (``align_corners=False``; captum's ``LayerAttribution.interpolate`` with
``trilinear``). Maps are not normalised: they are stored as computed, in units of
score × activation, and may be all zero (ReLU of a negative map).

The layer is ``--layer`` (:data:`LAYER`) or the network's
``gradcam_layer``; its output must be a 5-D (B, C, t, h, w) tensor (transformers' token layouts
are not supported). Each clip costs one forward and one backward pass (plus the engine's clean
forward). The backward starts at the layer: its output is replaced by a detached leaf that
requires grad, so nothing before the layer is differentiated and no parameter or input changes
``requires_grad``. Under autocast (bf16 / fp16) weights and sums are computed in float32.

Hooks are registered for one call only and removed on every exit path; they act only for the
thread that registered them, because one network is shared by the threads of a worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from transforms.methods.base import SCORE, Explanation, Method, register_method
from transforms.options import Option
from transforms.perturbation import PerturbationEngine, target_score
from transforms.tubes import Tubes

LAYER = Option("layer", str, None,
               "the network's layer for layer-based methods (default: the registry's)")

# --- Pure functions -------------------------------------------------------------------------


def gradcam_map(activations: torch.Tensor, gradients: torch.Tensor,
                per_frame: bool = False) -> torch.Tensor:
    """Grad-CAM of one clip at the layer's resolution.

    Args:
        activations: A, the layer's output (C, t, h, w).
        gradients: ∂f/∂A, same shape.
        per_frame: False: α_c = mean of the gradients over (t, h, w) (captum); True:
            α_{c,t} = their mean over (h, w) (STEP / mmaction2).

    Returns:
        float32 (t, h, w): ReLU(Σ_c α A_c), computed in float32 whatever the input dtype.
    """
    if activations.ndim != 4 or activations.shape != gradients.shape:
        raise ValueError(f"expected activations and gradients of one shape (C, t, h, w), got "
                         f"{tuple(activations.shape)} and {tuple(gradients.shape)}")
    acts, grads = activations.float(), gradients.float()
    if per_frame:
        weights = grads.mean(dim=(2, 3))  # (C, t)
        cam = torch.einsum("ct,cthw->thw", weights, acts)
    else:
        weights = grads.mean(dim=(1, 2, 3))  # (C,)
        cam = torch.einsum("c,cthw->thw", weights, acts)
    return F.relu(cam)


def upsample(cam: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """(t, h, w) → (T, H, W) by trilinear interpolation with ``align_corners=False``."""
    if cam.ndim != 3:
        raise ValueError(f"expected a (t, h, w) map, got {tuple(cam.shape)}")
    return F.interpolate(cam[None, None].float(), size=tuple(size), mode="trilinear",
                         align_corners=False)[0, 0]


def resolve_layer(model: nn.Module, layer: str | None, network: str) -> nn.Module:
    """The submodule called ``layer`` (dotted path); ValueError naming network and layer."""
    if not layer:
        raise ValueError(f"network {network!r} has no Grad-CAM layer; pass --layer with the "
                         "dotted name of a convolutional block whose output is "
                         "(B, C, T, H, W)")
    try:
        return model.get_submodule(layer)
    except AttributeError as err:
        raise ValueError(f"network {network!r} has no layer {layer!r} for Grad-CAM ({err}); "
                         "pass --layer with a dotted module name") from err


class _LayerCapture:
    """What the hook saw: the layer's output made a leaf that requires grad (one call only)."""

    def __init__(self, layer_name: str, network: str) -> None:
        self.layer_name, self.network = layer_name, network
        self.owner = threading.get_ident()
        self.leaves: list[torch.Tensor] = []

    def hook(self, module: nn.Module, inputs: tuple, output: object) -> torch.Tensor | None:
        if threading.get_ident() != self.owner:
            return None  # another thread's forward through the shared network
        if not torch.is_tensor(output) or output.ndim != 5:
            what = (f"a tensor of shape {tuple(output.shape)}" if torch.is_tensor(output)
                    else type(output).__name__)
            raise ValueError(
                f"Grad-CAM needs a (B, C, T, H, W) output from layer {self.layer_name!r} of "
                f"network {self.network!r}, got {what}; token layouts (transformers) are "
                "unsupported: choose a convolutional block with --layer")
        leaf = output.detach().requires_grad_(True)
        self.leaves.append(leaf)
        return leaf.clone()  # later in-place ops act on the copy, never on the leaf


@contextmanager
def capture_layer(layer: nn.Module, layer_name: str, network: str) -> Iterator[_LayerCapture]:
    """Hook ``layer`` for the duration of the block; the hook is removed on every exit."""
    capture = _LayerCapture(layer_name, network)
    handle = layer.register_forward_hook(capture.hook)
    try:
        yield capture
    finally:
        handle.remove()


def layer_activations_and_gradients(engine: PerturbationEngine, layer_name: str | None
                                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A and ∂f/∂A at the layer for the engine's clip (one forward, one backward, counted).

    Args:
        engine: the clip, target and score (``prob`` | ``logit``).
        layer_name: dotted module name in ``engine.scorer.model`` (None: ValueError).

    Returns:
        (activations, gradients), each (C, t, h, w) in the layer's dtype (e.g. bf16 under
        autocast).
    """
    scorer = engine.scorer
    layer = resolve_layer(scorer.model, layer_name, scorer.spec.name)
    with capture_layer(layer, layer_name, scorer.spec.name) as capture, torch.enable_grad():
        logits = scorer.logits(engine.x[None].detach())
        engine.passes.forward += 1
        if len(capture.leaves) != 1:
            raise ValueError(f"layer {layer_name!r} of network {scorer.spec.name!r} ran "
                             f"{len(capture.leaves)} times in one forward; Grad-CAM needs a "
                             "layer that runs exactly once")
        (leaf,) = capture.leaves
        score = target_score(logits, engine.target, engine.score_kind).sum()
        if not score.requires_grad:
            raise ValueError(f"the score does not depend on layer {layer_name!r} of network "
                             f"{scorer.spec.name!r}")
        (grad,) = torch.autograd.grad(score, leaf)
        engine.count_backward(1)
    return leaf.detach()[0], grad[0]


# --- Methods --------------------------------------------------------------------------------


class _GradCAM(Method):
    """Grad-CAM on ``options.layer`` or the network's ``gradcam_layer`` (see module)."""

    per_frame: bool = False
    reads = (LAYER, SCORE)

    def explain(self, engine: PerturbationEngine, tubes: Tubes | None) -> Explanation:
        layer = self.options.layer or engine.scorer.spec.gradcam_layer
        acts, grads = layer_activations_and_gradients(engine, layer)
        cam = gradcam_map(acts, grads, per_frame=self.per_frame)
        return Explanation(upsample(cam, engine.frame_shape).cpu())


@register_method("gradcam")
class GradCAM(_GradCAM):
    """3D Grad-CAM, one weight per channel (gradients averaged over t, h, w)."""

    name = "gradcam"


@register_method("gradcam_frame")
class GradCAMFrame(_GradCAM):
    """3D Grad-CAM, one weight per channel and frame (gradients averaged over h, w)."""

    name = "gradcam_frame"
    per_frame = True
