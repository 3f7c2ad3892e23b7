"""Inception-I3D (Carreira & Zisserman, CVPR 2017), RGB stream, in pure PyTorch.

A port of DeepMind's RGB I3D trained on Kinetics-400. Module names follow the original end
points (``Conv3d_1a_7x7`` ... ``Mixed_5c``, ``Branch_1.Conv3d_0b_3x3``) so that the converted
checkpoint maps one to one (see :mod:`models.i3d_weights`).

Numerics follow the TensorFlow/Flax original exactly:

* every convolution and max-pool uses TensorFlow ``"SAME"`` padding, which is asymmetric when
  the total padding is odd (the extra row goes after, i.e. bottom/right/later frames);
  max-pools pad with ``-inf`` (padded cells never win);
* batch norm has a learned bias but no scale, ``eps = 1e-3``;
* the head average-pools ``(2, 7, 7)`` with ``"VALID"`` padding, applies a 1x1x1 convolution
  1024 -> classes with bias, and averages the logits over time.

Input is RGB scaled to [-1, 1], shape ``(B, 3, T, H, W)``; the reference resolution is
16 x 224 x 224, where ``Mixed_5c`` yields ``(B, 1024, 2, 7, 7)``. For other sizes the head pool
window is clipped to the feature map and the logits are averaged over all remaining positions,
which equals the original wherever the original is defined.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import ModelSpec, register

log = logging.getLogger(__name__)

#: Name of the last Inception block: its output is the last convolutional feature map.
LAST_MIXED_BLOCK = "Mixed_5c"
#: Dotted module path of :data:`LAST_MIXED_BLOCK` inside :class:`InceptionI3d` (for Grad-CAM).
GRADCAM_LAYER = f"features.{LAST_MIXED_BLOCK}"

CLASS_NAMES_FILE = Path(__file__).resolve().parent / "data" / "kinetics400_classes.txt"

Triple = tuple[int, int, int]

# Output channels of the four branches: (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1).
MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``"SAME"`` padding ``(before, after)`` of one axis (dilation 1).

    The output has ``ceil(size / stride)`` cells; when the total padding is odd the extra cell
    goes after the data.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_padding_3d(shape: Sequence[int], kernel: Triple, stride: Triple) -> list[int]:
    """``F.pad`` argument for TensorFlow ``"SAME"`` padding of a ``(..., T, H, W)`` tensor.

    Args:
        shape: the input shape; its last three entries are ``(T, H, W)``.
        kernel: window ``(kT, kH, kW)``.
        stride: strides ``(sT, sH, sW)``.

    Returns:
        ``[W_before, W_after, H_before, H_after, T_before, T_after]``.
    """
    pads: list[int] = []
    for size, k, s in zip(reversed(shape[-3:]), reversed(kernel), reversed(stride), strict=True):
        pads.extend(same_padding(size, k, s))
    return pads


def _symmetric(pads: Sequence[int]) -> Triple | None:
    """``(pT, pH, pW)`` when every axis of an ``F.pad`` list pads equally, else None."""
    if any(pads[i] != pads[i + 1] for i in range(0, 6, 2)):
        return None
    return pads[4], pads[2], pads[0]


class SameConv3d(nn.Conv3d):
    """``nn.Conv3d`` with TensorFlow ``"SAME"`` padding computed from the input size.

    Shapes: ``(B, Cin, T, H, W) -> (B, Cout, ceil(T / sT), ceil(H / sH), ceil(W / sW))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Triple,
                 stride: Triple = (1, 1, 1), bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = same_padding_3d(x.shape, self.kernel_size, self.stride)
        sym = _symmetric(pads)
        if sym is None:
            return F.conv3d(F.pad(x, pads), self.weight, self.bias, self.stride)
        return F.conv3d(x, self.weight, self.bias, self.stride, padding=sym)


class SameMaxPool3d(nn.Module):
    """3D max-pool with TensorFlow ``"SAME"`` padding; padded cells are ``-inf``.

    Shapes: ``(B, C, T, H, W) -> (B, C, ceil(T / sT), ceil(H / sH), ceil(W / sW))``.
    """

    def __init__(self, kernel_size: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = same_padding_3d(x.shape, self.kernel_size, self.stride)
        sym = _symmetric(pads)
        if sym is not None and all(2 * p <= k for p, k in zip(sym, self.kernel_size, strict=True)):
            # PyTorch's implicit max-pool padding is already -inf.
            return F.max_pool3d(x, self.kernel_size, self.stride, padding=sym)
        x = F.pad(x, pads, value=float("-inf"))
        return F.max_pool3d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


class BatchNorm3dNoScale(nn.Module):
    """Batch norm with a learned bias and no scale (Sonnet v1 / the I3D release).

    ``y = (x - running_mean) / sqrt(running_var + eps) + bias`` in eval mode; in training mode
    batch statistics are used and the running ones updated with ``momentum`` (PyTorch
    convention: ``0.001`` is Flax's ``0.999``). Shapes: ``(B, C, T, H, W)`` in and out.
    """

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 1e-3) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias,
                            self.training, self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, scale=False"


class Unit3D(nn.Module):
    """SAME convolution (no bias) -> bias-only batch norm -> ReLU.

    Shapes: ``(B, Cin, T, H, W) -> (B, Cout, ceil(T / sT), ceil(H / sH), ceil(W / sW))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = SameConv3d(in_channels, out_channels, kernel_size, stride)
        self.bn = BatchNorm3dNoScale(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionBlock(nn.Module):
    """Inception module with four branches concatenated on channels.

    Branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool (stride 1) -> 1x1.
    Shapes: ``(B, Cin, T, H, W) -> (B, out_channels, T, H, W)``.

    Args:
        in_channels: input channels.
        channels: ``(b0, b1a, b1b, b2a, b2b, b3)`` output channels of the six convolutions.
    """

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        cube = (3, 3, 3)
        self.Branch_0 = nn.Sequential(OrderedDict(
            Conv3d_0a_1x1=Unit3D(in_channels, c0)))
        self.Branch_1 = nn.Sequential(OrderedDict(
            Conv3d_0a_1x1=Unit3D(in_channels, c1a),
            Conv3d_0b_3x3=Unit3D(c1a, c1b, cube)))
        self.Branch_2 = nn.Sequential(OrderedDict(
            Conv3d_0a_1x1=Unit3D(in_channels, c2a),
            Conv3d_0b_3x3=Unit3D(c2a, c2b, cube)))
        self.Branch_3 = nn.Sequential(OrderedDict(
            MaxPool3d_0a_3x3=SameMaxPool3d(cube, (1, 1, 1)),
            Conv3d_0b_1x1=Unit3D(in_channels, c3)))
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.Branch_0, self.Branch_1, self.Branch_2, self.Branch_3)
        return torch.cat([branch(x) for branch in branches], dim=1)


def _features() -> nn.Sequential:
    """The convolutional trunk up to ``Mixed_5c``: ``(B, 3, T, H, W) -> (B, 1024, t, h, w)``.

    With SAME padding ``t = ceil(T / 8)``, ``h = ceil(H / 32)``, ``w = ceil(W / 32)``.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["Conv3d_1a_7x7"] = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
    layers["MaxPool3d_2a_3x3"] = SameMaxPool3d((1, 3, 3), (1, 2, 2))
    layers["Conv3d_2b_1x1"] = Unit3D(64, 64)
    layers["Conv3d_2c_3x3"] = Unit3D(64, 192, (3, 3, 3))
    layers["MaxPool3d_3a_3x3"] = SameMaxPool3d((1, 3, 3), (1, 2, 2))
    channels = 192
    pools = {"Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3)),
             "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2))}
    for name, widths in MIXED_CHANNELS.items():
        if name in pools:
            pool_name, kernel = pools[name]
            layers[pool_name] = SameMaxPool3d(kernel, (2, 2, 2))
        block = InceptionBlock(channels, widths)
        layers[name] = block
        channels = block.out_channels
    return nn.Sequential(layers)


def head_pool(features: torch.Tensor) -> torch.Tensor:
    """VALID ``(2, 7, 7)`` average pool with the window clipped to the map (stride 1).

    ``(B, C, t, h, w) -> (B, C, t - kt + 1, h - kh + 1, w - kw + 1)``. Wrapped for torch.fx
    (its window depends on the input's shape), so the network traces (models/incremental.py).
    """
    window = [min(k, s) for k, s in zip((2, 7, 7), features.shape[-3:], strict=True)]
    return F.avg_pool3d(features, window, stride=1)


torch.fx.wrap("head_pool")


class InceptionI3d(nn.Module):
    """RGB Inception-I3D classifier.

    Input ``(B, 3, T, H, W)`` RGB in [-1, 1] (reference size 16 x 224 x 224); output logits
    ``(B, num_classes)``.

    Attributes:
        features: the trunk, an ``nn.Sequential`` whose children carry the original end-point
            names; ``features.Mixed_5c`` (:data:`GRADCAM_LAYER`) outputs ``(B, 1024, t, h, w)``.
        logits: 1x1x1 convolution ``1024 -> num_classes`` with bias (``Logits/Conv3d_0c_1x1``).
    """

    feature_channels = 1024

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = _features()
        self.logits = nn.Conv3d(self.feature_channels, num_classes, kernel_size=1, bias=True)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the ``Mixed_5c`` map.

        Args:
            features: ``(B, 1024, t, h, w)``.

        Returns:
            ``(B, num_classes)``: VALID ``(2, 7, 7)`` average pool (window clipped to the map),
            1x1x1 convolution, mean over the remaining positions (over time in the original).
        """
        return self.logits(head_pool(features)).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify clips.

        Args:
            x: ``(B, 3, T, H, W)`` RGB in [-1, 1].

        Returns:
            Logits ``(B, num_classes)``.
        """
        return self.head(self.features(x))


@lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    lines = CLASS_NAMES_FILE.read_text(encoding="utf-8").splitlines()
    names = tuple(line.strip() for line in lines if line.strip())
    if len(names) != 400:
        raise ValueError(f"{CLASS_NAMES_FILE} holds {len(names)} class names, expected 400")
    return names


def kinetics400_class_names() -> list[str]:
    """The 400 Kinetics class names in I3D logit order (bundled ``data`` file)."""
    return list(_class_names())


def load_default_weights(model: nn.Module, cache_dir: Path | None = None) -> str:
    """Load the converted DeepMind Kinetics-400 weights into ``model``.

    Fetches and converts them on first use (see :func:`models.i3d_weights.load_pretrained`).

    Returns:
        The SHA-256 of the converted weights file (the weights' identity in output rows).

    Raises:
        models.i3d_weights.WeightsUnavailable: the weights cannot be fetched or verified.
    """
    from models.i3d_weights import ensure_converted_weights, load_pretrained, sha256_file

    load_pretrained(model, cache_dir)
    return sha256_file(ensure_converted_weights(cache_dir))


def _converted_weights(cache_dir: Path | None = None) -> Path:
    from models.i3d_weights import ensure_converted_weights

    return ensure_converted_weights(cache_dir)


register(ModelSpec(
    name="i3d_kinetics400",
    build=lambda num_classes: InceptionI3d(num_classes),
    num_classes=400,
    input_size=224,
    num_frames=16,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    resize_ratio=256 / 224,
    class_names=kinetics400_class_names,
    gradcam_layer=GRADCAM_LAYER,
    channels_last=True,
    load_default_weights=load_default_weights,
    weights_file=_converted_weights,
))
