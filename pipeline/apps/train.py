"""Train the small 3D-CNN (``synth_small3d``) on the synthetic action dataset.

The committed checkpoint ``models/data/synth_small3d.pt`` (and its ``.json`` report) came from::

    python -m pipeline.apps.synth --out /tmp/vidxai_synth --seed 0 --per-class 250 --size 128 \\
        --frames 24 --camera-pan --decoy-fraction 0.5
    python -m pipeline.apps.train --data /tmp/vidxai_synth --out models/data/synth_small3d.pt \\
        --epochs 20 --seed 0

(752 train / 248 test clips; about 4 minutes on 2 CPU cores; the test accuracy, confusion
matrix and per-subset accuracies are in ``synth_small3d.pt.json``.)

Clips are decoded once with :func:`transforms.decode.decode_clip` (whole video, the spec's size
and resize ratio) and kept in memory as uint8; each training step takes a random window of
``spec.num_frames`` frames and applies label-aware augmentations: a horizontal flip swaps
``move_right``/``move_left``, a vertical flip swaps ``move_up``/``move_down`` and time reversal
swaps both. The test split is evaluated on the window the manifest names (``start_frame``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import ModelSpec, get_spec
from pipeline.apps.synth import CLASS_NAMES, HFLIP_LABEL, REVERSE_LABEL, VFLIP_LABEL
from transforms.decode import decode_clip

MODEL_NAME = "synth_small3d"


@dataclass(frozen=True)
class ManifestClip:
    """One manifest row: absolute video path, label, first frame, annotations and metadata."""

    video: str
    label: int
    start_frame: int
    num_boxes: int
    has_null_box: bool = False
    camera_pan: bool = False
    decoy: bool = False


def read_manifest(path: Path) -> list[ManifestClip]:
    """Parse a JSONL manifest; relative video paths are resolved against its directory."""
    clips = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        video = Path(row["video"])
        if not video.is_absolute():
            video = path.parent / video
        boxes = row.get("boxes") or []
        clips.append(ManifestClip(str(video), int(row["label"]), int(row.get("start_frame", 0)),
                                  len(boxes), any(box is None for box in boxes),
                                  bool(row.get("camera_pan")), bool(row.get("decoy"))))
    return clips


def load_frames(clips: Sequence[ManifestClip], spec: ModelSpec, whole: bool) -> np.ndarray:
    """Decode clips with the spec's preprocessing.

    Args:
        clips: manifest rows.
        spec: model spec (input size, frames, resize ratio).
        whole: decode every annotated frame from 0 (for random windows) instead of the
            ``spec.num_frames`` window at ``start_frame``.

    Returns:
        uint8 (N, T, S, S, 3) RGB, T = the shortest clip length when ``whole``.
    """
    out = []
    for clip in clips:
        start, count = (0, clip.num_boxes) if whole else (clip.start_frame, spec.num_frames)
        decoded = decode_clip(clip.video, start, count, spec.input_size,
                              resize_ratio=spec.resize_ratio)
        out.append(decoded.frames)
    length = min(len(frames) for frames in out)
    return np.stack([frames[:length] for frames in out])


def to_input(frames: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) RGB -> float (B, 3, T, H, W) normalised by the spec's mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)
    x = x.permute(0, 4, 1, 2, 3)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1, 1)
    return ((x - mean) / std).contiguous()


def augment(frames: np.ndarray, label: int, rng: np.random.Generator, num_frames: int
            ) -> tuple[np.ndarray, int]:
    """Random window + label-aware flips / time reversal of one clip.

    Args:
        frames: uint8 (T, H, W, 3) with T >= ``num_frames``.
        label: class index of :data:`pipeline.apps.synth.CLASS_NAMES`.
        rng: source of randomness.
        num_frames: window length.

    Returns:
        (uint8 (num_frames, H, W, 3), the label of the transformed clip)
    """
    start = int(rng.integers(0, frames.shape[0] - num_frames + 1))
    clip = frames[start:start + num_frames]
    if rng.random() < 0.5:
        clip, label = clip[:, :, ::-1], HFLIP_LABEL[label]
    if rng.random() < 0.5:
        clip, label = clip[:, ::-1], VFLIP_LABEL[label]
    if rng.random() < 0.5:
        clip, label = clip[::-1], REVERSE_LABEL[label]
    return clip, label


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C): rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return matrix


@torch.no_grad()
def predict(model: nn.Module, frames: np.ndarray, spec: ModelSpec, batch_size: int = 32
            ) -> np.ndarray:
    """Predicted class of each clip ``uint8 (N, T, H, W, 3)`` -> int64 (N,)."""
    model.eval()
    preds = [model(to_input(frames[i:i + batch_size], spec)).argmax(1)
             for i in range(0, len(frames), batch_size)]
    return torch.cat(preds).numpy()


def train_epoch(model: nn.Module, optimiser: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, frames: np.ndarray,
                labels: np.ndarray, spec: ModelSpec, rng: np.random.Generator,
                batch_size: int) -> float:
    """One pass over the training clips in random order; returns the mean loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    order = rng.permutation(len(frames))
    total, seen = 0.0, 0
    for i in range(0, len(order), batch_size):
        pairs = [augment(frames[j], int(labels[j]), rng, spec.num_frames)
                 for j in order[i:i + batch_size]]
        x = to_input(np.stack([clip for clip, _ in pairs]), spec)
        y = torch.tensor([label for _, label in pairs])
        loss = loss_fn(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        total += loss.item() * len(pairs)
        seen += len(pairs)
    return total / max(seen, 1)


def train(data: Path, out: Path, epochs: int, seed: int, batch_size: int = 16,
          lr: float = 3e-3, threads: int = 2) -> dict:
    """Train on ``data/train.jsonl``, evaluate on ``data/test.jsonl``, save the state_dict.

    Returns:
        The report written to ``<out>.json`` (accuracy, confusion matrix, epochs, seed, ...).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec = get_spec(MODEL_NAME)
    began = time.perf_counter()
    train_clips = read_manifest(data / "train.jsonl")
    test_clips = read_manifest(data / "test.jsonl")
    train_frames = load_frames(train_clips, spec, whole=True)
    train_labels = np.array([clip.label for clip in train_clips])
    test_frames = load_frames(test_clips, spec, whole=False)
    test_labels = np.array([clip.label for clip in test_clips])
    print(f"decoded {len(train_clips)} train + {len(test_clips)} test clips "
          f"in {time.perf_counter() - began:.1f} s", flush=True)

    model = spec.build(spec.num_classes)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train_clips) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps,
                                                    pct_start=0.15)
    for epoch in range(epochs):
        loss = train_epoch(model, optimiser, scheduler, train_frames, train_labels, spec, rng,
                           batch_size)
        acc = float((predict(model, test_frames, spec) == test_labels).mean())
        print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, test accuracy {acc:.4f} "
              f"({time.perf_counter() - began:.0f} s)", flush=True)

    preds = predict(model, test_frames, spec)
    subsets = {
        "target_leaves_view": np.array([clip.has_null_box for clip in test_clips]),
        "camera_pan": np.array([clip.camera_pan for clip in test_clips]),
        "decoy": np.array([clip.decoy for clip in test_clips]),
    }
    report = {
        "model": MODEL_NAME,
        "accuracy": float((preds == test_labels).mean()),
        "subset_accuracy": {
            f"{name}={flag}": _subset_accuracy(preds, test_labels, mask == flag)
            for name, mask in subsets.items() for flag in (True, False)},
        "confusion_matrix": confusion_matrix(test_labels, preds, spec.num_classes).tolist(),
        "class_names": list(CLASS_NAMES),
        "epochs": epochs,
        "seed": seed,
        "seconds": round(time.perf_counter() - began, 1),
        "threads": threads,
        "train_clips": len(train_clips),
        "test_clips": len(test_clips),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": str(data),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    out.with_suffix(out.suffix + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _subset_accuracy(preds: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> float | None:
    return float((preds[keep] == labels[keep]).mean()) if keep.any() else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.apps.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True,
                        help="dataset directory written by pipeline.apps.synth")
    parser.add_argument("--out", type=Path, default=Path("models/data/synth_small3d.pt"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = train(args.data, args.out, args.epochs, args.seed, args.batch_size, args.lr,
                   args.threads)
    print(f"test accuracy {report['accuracy']:.4f} ({report['test_clips']} clips), "
          f"{report['seconds']} s; confusion (rows true, cols predicted): "
          f"{report['confusion_matrix']}; saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
