"""torchvision's Kinetics-400 video classifiers with their own preprocessing presets.

Registered: the ResNet-18 family (``r3d_18``, ``mc3_18``, ``r2plus1d_18``), ``s3d``, and the
transformers ``mvit_v2_s`` and ``swin3d_t``. Every preset below is copied from the
``transforms=partial(VideoClassification, ...)`` of the network's weights enum in
``torchvision/models/video/`` (crop, resize, mean/std) and its ``meta`` (minimum clip length,
categories). torchvision's Kinetics-400 ``categories`` are, in order, exactly the names in
``models/data/kinetics400_classes.txt`` (checked in tests/test_models.py), so the networks share
the I3D class-name list.

No weights are downloaded: pass ``--checkpoint`` with a local state_dict, for instance one saved
with ``torch.save(torchvision.models.video.s3d(weights="DEFAULT").state_dict(), "s3d.pt")`` on
a machine that can download.

Input shapes (B, 3, T, H, W) at the presets and what each network tolerates:

* ResNet-18 family: 16 x 112 x 112; any size works (global average pooling).
* ``s3d``: 16 x 224 x 224; at least 14 frames (meta ``min_temporal_size``) and about 224 pixels,
  because its head average-pools a fixed (2, 7, 7) window.
* ``mvit_v2_s``: exactly 16 x 224 x 224 (learned positional embeddings and relative-position
  tables are sized for 8 x 56 x 56 tokens): ``fixed_input=True``.
* ``swin3d_t``: 16 x 224 x 224 preset; other sizes work (windows are padded).
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models import video as tvv

from models.i3d import kinetics400_class_names
from models.registry import ModelSpec, register

# VideoClassification's default mean/std (R3D, MC3, R(2+1)D and S3D presets).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# MViT presets.
MVIT_MEAN = (0.45, 0.45, 0.45)
MVIT_STD = (0.225, 0.225, 0.225)
# Swin3D presets: ImageNet statistics (its 2D Swin backbone was pretrained on ImageNet).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build(name: str, num_classes: int) -> nn.Module:
    """torchvision's ``video.<name>`` with random weights and ``num_classes`` outputs."""
    return getattr(tvv, name)(weights=None, num_classes=num_classes)


def _weights_note(enum: str) -> str:
    return (f"torchvision.models.video.{enum}.KINETICS400_V1: save its state_dict() on a "
            "connected machine and pass it with --checkpoint (nothing is downloaded)")


# ResNet-18 family: preset resize (128, 171) then crop 112; vidxai resizes the short side to 128.
for _name, _enum in (("r3d_18", "R3D_18_Weights"), ("mc3_18", "MC3_18_Weights"),
                     ("r2plus1d_18", "R2Plus1D_18_Weights")):
    register(ModelSpec(
        name=_name,
        build=partial(_build, _name),
        num_classes=400,
        input_size=112,
        num_frames=16,
        mean=KINETICS_MEAN,
        std=KINETICS_STD,
        resize_ratio=128 / 112,
        class_names=kinetics400_class_names,
        gradcam_layer="layer4",
        channels_last=True,
        weights_note=_weights_note(_enum),
    ))

# S3D: preset resize (256, 256) (square, aspect not kept) then crop 224; vidxai resizes the short
# side to 256 instead. Grad-CAM on "features", whose output is the last separable Inception block
# (B, 1024, T/8, 7, 7). Fed channels_last_3d: faster on the CPU (docs/BENCHMARKS.md,
# memory_format).
register(ModelSpec(
    name="s3d",
    build=partial(_build, "s3d"),
    num_classes=400,
    input_size=224,
    num_frames=16,
    mean=KINETICS_MEAN,
    std=KINETICS_STD,
    resize_ratio=256 / 224,
    class_names=kinetics400_class_names,
    gradcam_layer="features",
    min_frames=14,
    channels_last=True,
    weights_note=_weights_note("S3D_Weights"),
))

# The transformers get no Grad-CAM layer: their blocks output token sequences — MViT
# (B, 1 + T'H'W', C) with a class token, Swin3D (B, T', H', W', C) channels-last — not the
# (B, C, T, H, W) feature maps vidxai's Grad-CAM weights and upsamples; the model-agnostic
# methods (AOSA, occlusion, ...) apply unchanged. They are fed contiguous tensors:
# channels_last_3d gave them nothing measurable (docs/BENCHMARKS.md, memory_format).
register(ModelSpec(
    name="mvit_v2_s",
    build=partial(_build, "mvit_v2_s"),
    num_classes=400,
    input_size=224,
    num_frames=16,
    mean=MVIT_MEAN,
    std=MVIT_STD,
    resize_ratio=256 / 224,
    class_names=kinetics400_class_names,
    gradcam_layer=None,
    min_frames=16,
    fixed_input=True,
    weights_note=_weights_note("MViT_V2_S_Weights"),
))

register(ModelSpec(
    name="swin3d_t",
    build=partial(_build, "swin3d_t"),
    num_classes=400,
    input_size=224,
    num_frames=16,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    resize_ratio=256 / 224,
    class_names=kinetics400_class_names,
    gradcam_layer=None,
    weights_note=_weights_note("Swin3D_T_Weights"),
))
