"""User-style network factories for the ``"module:callable"`` tests (tests/test_models.py)."""

from __future__ import annotations

import time

import torch
from torch import nn


class SmallNet(nn.Module):
    """Two 3D convolutions, pooling and a linear head: (B, 3, T, H, W) -> (B, num_classes).

    A forward pass at 8 x 24 x 24 takes about a millisecond on a CPU.
    """

    def __init__(self, num_classes: int = 3, width: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, width, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(width, 2 * width, kernel_size=3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> logits (B, num_classes)."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    @classmethod
    def build(cls) -> SmallNet:
        """A dotted-attribute factory (``tests.user_models:SmallNet.build``), 3 classes."""
        return cls(3)


def small_net(num_classes: int = 3) -> nn.Module:
    """Factory that takes ``num_classes``."""
    return SmallNet(num_classes)


def five_class_net() -> nn.Module:
    """Factory without a ``num_classes`` parameter: always 5 classes."""
    return SmallNet(5)


def image_net_2d() -> nn.Module:
    """A 2D network: fails on (B, 3, T, H, W) video input."""
    return nn.Sequential(nn.Conv2d(3, 4, kernel_size=3), nn.Flatten(), nn.LazyLinear(2))


def not_a_module() -> str:
    """A factory that returns something other than an ``nn.Module``."""
    return "not a network"


class SlowNet(SmallNet):
    """:class:`SmallNet` whose every forward also sleeps 10 ms: a run that lasts long enough
    to be killed part-way (tests/test_dataset_scale.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return super().forward(x)


def slow_net(num_classes: int = 3) -> nn.Module:
    return SlowNet(num_classes)
