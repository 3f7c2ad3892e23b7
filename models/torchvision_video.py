"""torchvision's ResNet-18 video classifiers (R3D, MC3, R(2+1)D), Kinetics-400 preprocessing.

No weights are downloaded: pass ``--checkpoint`` with a local state_dict (for instance one
saved from ``torchvision.models.video.r3d_18(weights=...)`` on a machine that can download).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import video as tvv

from models.registry import ModelSpec, register

# torchvision.models.video presets (VideoClassification): Kinetics mean/std, resize 128, crop 112.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def _builder(fn):
    def build(num_classes: int) -> nn.Module:
        return fn(weights=None, num_classes=num_classes)

    return build


for _name, _fn in (("r3d_18", tvv.r3d_18), ("mc3_18", tvv.mc3_18),
                   ("r2plus1d_18", tvv.r2plus1d_18)):
    register(ModelSpec(
        name=_name,
        build=_builder(_fn),
        num_classes=400,
        input_size=112,
        num_frames=16,
        mean=KINETICS_MEAN,
        std=KINETICS_STD,
        resize_ratio=128 / 112,
        gradcam_layer="layer4",
        channels_last=True,
        description=f"torchvision {_name} (ResNet-18 video), 16x112x112",
    ))
