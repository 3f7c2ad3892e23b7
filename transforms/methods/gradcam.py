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

The layer is ``--layer`` or the network's ``gradcam_layer``, read through
:mod:`transforms.methods.layers` (its output must be (B, C, t, h, w); the backward starts at
the layer). Each clip costs one forward and one backward pass (plus the engine's clean
forward). Under autocast (bf16 / fp16) weights and sums are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transforms.methods.base import SCORE, Explanation, Method, register_method
from transforms.methods.layers import LAYER, layer_activations_and_gradients
from transforms.perturbation import PerturbationEngine
from transforms.tubes import Tubes

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


# --- Methods --------------------------------------------------------------------------------


class _GradCAM(Method):
    """Grad-CAM on ``options.layer`` or the network's ``gradcam_layer`` (see module)."""

    per_frame: bool = False
    reads = (LAYER, SCORE)

    def needs_layer(self) -> bool:
        return True

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
