"""A tiny 3D-CNN with the layout of the real ones, for tests and smoke runs.

Two 3x3x3 convolutions, global average pooling and a linear head: a forward pass on a
8x32x32 clip takes well under a millisecond, so exact AOSA runs in tests.
"""

from __future__ import annotations

import torch
from torch import nn

from models.registry import ModelSpec, register


class TinyVideoNet(nn.Module):
    """Input (B, 3, T, H, W) -> logits (B, num_classes)."""

    def __init__(self, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, width, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.features = nn.Sequential(
            nn.Conv3d(width, 2 * width, kernel_size=3, stride=(1, 2, 2), padding=1),
            nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


register(ModelSpec(
    name="tiny",
    build=lambda num_classes: TinyVideoNet(num_classes),
    num_classes=4,
    input_size=32,
    num_frames=8,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    gradcam_layer="features",
))
