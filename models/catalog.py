"""The registered networks' names and one-line descriptions, importable without torch.

``run_pipeline.py --list-models`` prints this table without importing torch (its start-up time:
docs/BENCHMARKS.md, ``startup``); the registry (``models.registry``) takes each spec's
description from it, so it is declared once.
A test checks that it names exactly the registered networks.
"""

from __future__ import annotations

DESCRIPTIONS: dict[str, str] = {
    "i3d_kinetics400": "DeepMind RGB Inception-I3D, Kinetics-400, 16x224x224 in [-1, 1]",
    "synth_small3d": "small 3D-CNN trained on the synthetic action dataset, 16x64x64",
    "tiny": "tiny 2-layer 3D-CNN for tests (random weights)",
    "r3d_18": "torchvision r3d_18 (ResNet-18 video), Kinetics-400, 16x112x112",
    "mc3_18": "torchvision mc3_18 (ResNet-18 video), Kinetics-400, 16x112x112",
    "r2plus1d_18": "torchvision r2plus1d_18 (ResNet-18 video), Kinetics-400, 16x112x112",
    "s3d": "torchvision S3D, Kinetics-400, 16x224x224 (>= 14 frames, ~224 px)",
    "mvit_v2_s": "torchvision MViT-V2-S, Kinetics-400, exactly 16x224x224",
    "swin3d_t": "torchvision Swin3D-T, Kinetics-400, 16x224x224 (ImageNet mean/std)",
}
