"""Frozen run configuration, validated once in the driver, and its hash.

Every value that changes a result is part of :meth:`RunConfig.result_key`, whose hash is
written next to every output row: rows with equal hashes were computed the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

from models.registry import ModelSpec, get_spec
from transforms.methods.aosa import AGGREGATIONS
from transforms.methods.base import available_methods
from transforms.scoring import PRECISIONS, resolve_device
from transforms.tubes import num_anchors

TARGET_KEYWORDS = ("predicted", "label")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; see the README's option table for each field."""

    input: str
    output: str
    model: str = "tiny"
    checkpoint: str | None = None
    methods: tuple[str, ...] = ("aosa",)
    stride: int | None = None  # default: size / 14 (the paper's N = 196)
    box_size: int | None = None  # default: 2 × stride (16 px at s = 8, as the paper)
    topk: int = 3
    num_frames: int | None = None  # default: the model's
    size: int | None = None  # default: the model's
    frame_stride: int = 1
    batch_size: int = 8
    device: str = "auto"
    precision: str = "auto"
    target: str = "predicted"
    aggregation: str = "mean"
    metrics: bool = True
    metric_steps: int = 28
    pointing_radius: float | None = None  # default: 7 px at 112 px, scaled with size
    insertion_blur: float = 0.0
    seed: int = 0
    cache_dir: str | None = None
    threads: int = 0

    # The network's registry entry (model-dependent defaults come from it in resolve()).
    @property
    def spec(self) -> ModelSpec:
        return get_spec(self.model)

    def resolve(self) -> RunConfig:
        """Fill the model-dependent defaults and validate; ValueError with one-line reasons."""
        spec = get_spec(self.model)  # raises for unknown models
        size = spec.input_size if self.size is None else self.size
        stride = max(1, size // 14) if self.stride is None else self.stride
        cfg = dataclasses.replace(
            self,
            size=size,
            num_frames=spec.num_frames if self.num_frames is None else self.num_frames,
            stride=stride,
            box_size=2 * stride if self.box_size is None else self.box_size,
            pointing_radius=(self.pointing_radius if self.pointing_radius is not None
                             else 7.0 * size / 112),
            methods=tuple(m.strip() for m in self.methods if m.strip()),
        )
        cfg._validate(spec)
        return cfg

    def _validate(self, spec: ModelSpec) -> None:
        assert None not in (self.size, self.num_frames, self.stride, self.box_size)
        checks = [
            (self.size >= 8, f"--size must be >= 8, got {self.size}"),
            (self.num_frames >= max(2, spec.min_frames),
             f"--num-frames must be >= {max(2, spec.min_frames)} for {spec.name}, "
             f"got {self.num_frames}"),
            (self.frame_stride >= 1, f"--frame-stride must be >= 1, got {self.frame_stride}"),
            (1 <= self.stride <= self.size,
             f"--stride must be in [1, {self.size}], got {self.stride}"),
            (1 <= self.box_size <= self.size,
             f"--box-size must be in [1, {self.size}], got {self.box_size}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.metric_steps >= 1, f"--metric-steps must be >= 1, got {self.metric_steps}"),
            (self.pointing_radius is not None and self.pointing_radius >= 0,
             f"--pointing-radius must be >= 0, got {self.pointing_radius}"),
            (self.insertion_blur >= 0,
             f"--insertion-blur must be >= 0, got {self.insertion_blur}"),
            (bool(self.methods), "--methods is empty"),
            (self.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.aggregation in AGGREGATIONS,
             f"--aggregation must be one of {', '.join(AGGREGATIONS)}, "
             f"got {self.aggregation!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        n = num_anchors(self.size, self.size, self.stride)
        if not 0 <= self.topk < n:
            raise ValueError(f"--topk must be in [0, {n - 1}] ({n} masks at stride "
                             f"{self.stride}), got {self.topk}")
        known = available_methods()
        for m in self.methods:
            if m not in known:
                raise ValueError(f"unknown method {m!r} in --methods; choose from "
                                 f"{', '.join(known)}")
        resolve_device(self.device)
        if self.checkpoint and not os.path.isfile(self.checkpoint):
            raise ValueError(f"--checkpoint {self.checkpoint} does not exist")
        self.fixed_target(spec)  # raises for unknown classes

    def fixed_target(self, spec: ModelSpec | None = None) -> int | None:
        """The class index when ``--target`` names one class; None for predicted/label."""
        if self.target in TARGET_KEYWORDS:
            return None
        spec = spec or self.spec
        if self.target.lstrip("-").isdigit():
            idx = int(self.target)
            if not 0 <= idx < spec.num_classes:
                raise ValueError(f"--target {idx} is out of range: {spec.name} has "
                                 f"{spec.num_classes} classes")
            return idx
        names = spec.class_names() if spec.class_names else None
        if names and self.target in names:
            return names.index(self.target)
        raise ValueError(f"--target {self.target!r} is not 'predicted', 'label', a class index "
                         f"or a class name of {spec.name}")

    def result_key(self) -> dict:
        """The fields that change results (the output location and execution knobs excluded)."""
        key = dataclasses.asdict(self)
        for k in ("input", "output", "device", "threads", "cache_dir", "batch_size"):
            key.pop(k)
        if self.checkpoint and os.path.isfile(self.checkpoint):
            st = os.stat(self.checkpoint)
            key["checkpoint"] = f"{os.path.basename(self.checkpoint)}:{st.st_size}"
        return key

    def config_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of :meth:`result_key`."""
        text = json.dumps(self.result_key(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
