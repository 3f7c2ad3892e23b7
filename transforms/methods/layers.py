"""A hidden layer of the network for the layer-based methods (Grad-CAM, AOSA-approx's
expansion in a layer): its activations, the score's gradients with respect to them, and the
score with the layer's output replaced.

The layer is ``--layer`` (:data:`LAYER`) or the network's ``gradcam_layer``; its output must be a
5-D (B, C, t, h, w) tensor (transformers' token layouts are not supported). Gradients start at
the layer: its output is replaced by a detached leaf that requires grad, so nothing before the
layer is differentiated and no parameter or input changes ``requires_grad``.

Hooks are registered for one call only and removed on every exit path; they act only for the
thread that registered them, because one network is shared by the threads of a worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from transforms.options import Option
from transforms.perturbation import PerturbationEngine, target_score

LAYER = Option("layer", str, None,
               "the network's layer for layer-based methods (default: the registry's)")


def resolve_layer(model: nn.Module, layer: str | None, network: str) -> nn.Module:
    """The submodule called ``layer`` (dotted path); ValueError naming network and layer."""
    if not layer:
        raise ValueError(f"network {network!r} has no Grad-CAM layer; pass --layer with the "
                         "dotted name of a convolutional block whose output is "
                         "(B, C, T, H, W) (AOSA-approx: or --approx-at input)")
    try:
        return model.get_submodule(layer)
    except AttributeError as err:
        raise ValueError(f"network {network!r} has no layer {layer!r} for Grad-CAM ({err}); "
                         "pass --layer with a dotted module name") from err


class _LayerCapture:
    """What the hook saw: the layer's output made a leaf that requires grad (one call only),
    or ``replace`` in its place when given (same shape)."""

    def __init__(self, layer_name: str, network: str,
                 replace: torch.Tensor | None = None) -> None:
        self.layer_name, self.network, self.replace = layer_name, network, replace
        self.owner = threading.get_ident()
        self.leaves: list[torch.Tensor] = []

    def hook(self, module: nn.Module, inputs: tuple, output: object) -> torch.Tensor | None:
        if threading.get_ident() != self.owner:
            return None  # another thread's forward through the shared network
        if not torch.is_tensor(output) or output.ndim != 5:
            what = (f"a tensor of shape {tuple(output.shape)}" if torch.is_tensor(output)
                    else type(output).__name__)
            raise ValueError(
                f"a layer-based method needs a (B, C, T, H, W) output from layer "
                f"{self.layer_name!r} of network {self.network!r}, got {what}; token layouts "
                "(transformers) are unsupported: choose a convolutional block with --layer")
        value = output if self.replace is None else self.replace
        if value.shape != output.shape:
            raise ValueError(f"layer {self.layer_name!r} of network {self.network!r} outputs "
                             f"{tuple(output.shape)}, not the {tuple(value.shape)} given")
        leaf = value.detach().to(output.dtype).requires_grad_(True)
        self.leaves.append(leaf)
        return leaf.clone()  # later in-place ops act on the copy, never on the leaf


@contextmanager
def capture_layer(layer: nn.Module, layer_name: str, network: str,
                  replace: torch.Tensor | None = None) -> Iterator[_LayerCapture]:
    """Hook ``layer`` for the duration of the block; the hook is removed on every exit."""
    capture = _LayerCapture(layer_name, network, replace)
    handle = layer.register_forward_hook(capture.hook)
    try:
        yield capture
    finally:
        handle.remove()


def layer_outputs(engine: PerturbationEngine, layer_name: str | None, clips: torch.Tensor,
                  grad: bool = True, replace: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Scores, activations and (with ``grad``) ∂f/∂A at the layer for a batch of clips.

    Args:
        engine: the target and score (``prob`` | ``logit``); counts B forwards (and B
            backwards with ``grad``: one backward call for the batch).
        clips: (B, 3, T, H, W).
        replace: (B, C, t, h, w) activations the layer outputs instead of its own, or None.

    Returns:
        scores (B,), activations (B, C, t, h, w) and gradients (same, or None), in the layer's
        dtype (e.g. bf16 under autocast).
    """
    scorer = engine.scorer
    layer = resolve_layer(scorer.model, layer_name, scorer.spec.name)
    with (capture_layer(layer, layer_name, scorer.spec.name, replace) as capture,
          torch.set_grad_enabled(grad)):
        logits = scorer.logits(clips.detach())
        engine.passes.forward += clips.shape[0]
        if len(capture.leaves) != 1:
            raise ValueError(f"layer {layer_name!r} of network {scorer.spec.name!r} ran "
                             f"{len(capture.leaves)} times in one forward; a layer-based "
                             "method needs a layer that runs exactly once")
        (leaf,) = capture.leaves
        scores = target_score(logits, engine.target, engine.score_kind)
        if not grad:
            return scores.detach(), leaf.detach(), None
        if not scores.requires_grad:
            raise ValueError(f"the score does not depend on layer {layer_name!r} of network "
                             f"{scorer.spec.name!r}")
        (grads,) = torch.autograd.grad(scores.sum(), leaf)
        engine.count_backward(clips.shape[0])
    return scores.detach(), leaf.detach(), grads


def gradients_at_layer(engine: PerturbationEngine, layer_name: str | None,
                       points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The score and ∂f/∂A with the layer's output replaced by each of ``points``.

    The engine's clip runs up to the layer (the network has no entry point there), so this
    costs B forwards and B backwards (counted), of which the backward stops at the layer.

    Args:
        points: (B, C, t, h, w) activations of the layer.

    Returns:
        scores (B,), gradients (B, C, t, h, w) float32.
    """
    clips = engine.x[None].expand(points.shape[0], *engine.x.shape)
    scores, _, grads = layer_outputs(engine, layer_name, clips, replace=points)
    return scores, grads.float()


def layer_activations_and_gradients(engine: PerturbationEngine, layer_name: str | None
                                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A and ∂f/∂A at the layer for the engine's clip (one forward, one backward, counted).

    Returns:
        (activations, gradients), each (C, t, h, w) in the layer's dtype (e.g. bf16 under
        autocast).
    """
    _, acts, grads = layer_outputs(engine, layer_name, engine.x[None])
    return acts[0], grads[0]
