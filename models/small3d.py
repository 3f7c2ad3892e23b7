"""A small 3D-CNN trained on the synthetic action dataset (``pipeline.apps.synth``).

Four conv3d + batch-norm + ReLU blocks, global average pooling and a linear head (~0.3 M
parameters). Input 16 frames x 64 x 64 (the 128-pixel synthetic videos resized by half), so a
forward pass costs ~0.1 GFLOP and exact AOSA on it stays cheap on a CPU.

The trained weights are committed as ``models/data/synth_small3d.pt`` (see ``pipeline.apps.train``
for the command that produced them) and load by default.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from models.registry import ModelSpec, load_checkpoint, register

log = logging.getLogger(__name__)

# Must match pipeline.apps.synth.CLASS_NAMES (models never import the pipeline).
SYNTH_CLASS_NAMES = ("move_right", "move_left", "move_up", "move_down")
CHECKPOINT = Path(__file__).resolve().parent / "data" / "synth_small3d.pt"


def conv_block(c_in: int, c_out: int, stride: tuple[int, int, int]) -> nn.Sequential:
    """3x3x3 convolution (no bias) + batch-norm + ReLU; ``stride`` is (t, h, w)."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


class Small3DNet(nn.Module):
    """Input (B, 3, T, H, W) -> logits (B, num_classes).

    Feature maps for a 16x64x64 input: stem (16, 16, 32, 32), block1 (32, 8, 16, 16),
    block2 (64, 4, 8, 8), block3 (128, 4, 8, 8) -- the Grad-CAM layer.
    """

    def __init__(self, num_classes: int = 4, widths: tuple[int, ...] = (16, 32, 64, 128),
                 dropout: float = 0.2) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = conv_block(3, w0, (1, 2, 2))
        self.block1 = conv_block(w0, w1, (2, 2, 2))
        self.block2 = conv_block(w1, w2, (2, 2, 2))
        self.block3 = conv_block(w2, w3, (1, 1, 1))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def load_default_weights(model: nn.Module, cache_dir: Path | None = None) -> str | None:
    """Load the committed checkpoint into ``model``.

    Returns:
        The checkpoint file's SHA-256, or None when it is not there.
    """
    if not CHECKPOINT.is_file():
        log.warning("no committed checkpoint at %s (run pipeline.apps.train)", CHECKPOINT)
        return None
    load_checkpoint(model, CHECKPOINT)
    return hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest()


SPEC = register(ModelSpec(
    name="synth_small3d",
    build=lambda num_classes: Small3DNet(num_classes),
    num_classes=len(SYNTH_CLASS_NAMES),
    input_size=64,
    num_frames=16,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    resize_ratio=1.0,
    class_names=lambda: list(SYNTH_CLASS_NAMES),
    gradcam_layer="block3",
    load_default_weights=load_default_weights,
    min_frames=4,
))
