"""Model scoring on the device: preprocessing, batched forwards, with or without gradients.

One :class:`Scorer` owns a network, its preprocessing and the device policy; the model handler
(:mod:`transforms.model_handler`) builds it on the worker and shares it per process. Methods and
metrics reach it through the perturbation engine (:mod:`transforms.perturbation`), which counts
passes (a Scorer is shared by the threads of a worker, so it keeps no per-clip state). Nothing
here forces ``no_grad``: gradient methods differentiate :meth:`Scorer.logits`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models.allocator import retain_freed_memory
from models.incremental import DEFAULT_GRID, DEFAULT_THRESHOLD, IncrementalExecutor
from models.registry import ModelSpec

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_device_name(device: str) -> None:
    """Syntax only (``auto``, ``cpu``, ``cuda``, ``cuda:N``): whether the device exists is
    checked where the network loads (a CPU laptop may launch a GPU job on a cluster)."""
    if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:")
                                             and device[5:].isdigit()):
        return
    raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was asked for but this machine has no CUDA "
                         "device (use --device auto to fall back to the CPU)")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a precision name, or None for plain fp32.

    ``auto`` is fp16 autocast on CUDA and fp32 on CPU (bf16 on CPU is opt-in: it is fast only on
    CPUs with native bf16 and changes logits by ~1e-3).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs a CUDA device; use bf16 or fp32 on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass
class Scorer:
    """A network ready to score batches of clips.

    Attributes:
        model: the network in eval mode on ``device``.
        spec: its registry entry (preprocessing).
        device: where inputs, masks and the model live.
        amp_dtype: autocast dtype, or None for fp32.
        class_names: names of the output classes, or None (indices are reported then).
        weights_sha256: identity of the weights (see the model handler).
    """

    model: nn.Module
    spec: ModelSpec
    device: torch.device
    amp_dtype: torch.dtype | None = None
    class_names: list[str] | None = None
    weights_sha256: str = ""
    _mean: torch.Tensor = field(init=False, repr=False)
    _std: torch.Tensor = field(init=False, repr=False)
    _memory_format: torch.memory_format = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.device.type == "cpu":
            retain_freed_memory()  # forwards on the CPU stop re-faulting their activations
        self.model = self.model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)  # input gradients still flow; weights are never trained here
        shape = (3, 1, 1, 1)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.spec.std, device=self.device).view(shape)
        self._memory_format = (torch.channels_last_3d if self.spec.channels_last
                               else torch.contiguous_format)

    def to_input(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) RGB → normalised float32 (3, T, H, W) on the device."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} "
                             f"{frames.shape}")
        t = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        x = t.permute(3, 0, 1, 2).float().div_(255.0)
        return ((x - self._mean) / self._std).contiguous()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) → float32 logits (B, num_classes); differentiable w.r.t. ``x``."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, T, H, W) batch, got {tuple(x.shape)}")
        # One memory-format policy for every caller (the spec says which one the network likes).
        x = x.contiguous(memory_format=self._memory_format)
        if self.amp_dtype is None:
            return self.model(x).float()
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
            return self.model(x).float()

    def incremental(self, x: torch.Tensor, threshold: float = DEFAULT_THRESHOLD,
                    grid: tuple[int, int, int] = DEFAULT_GRID, keep: float = 1.0
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Logits of clips that differ from the clean clip ``x`` (3, T, H, W), computed
        incrementally (:mod:`models.incremental`): the clean activations are recorded here,
        once; the returned ``logits(batch (B, 3, T, H, W)) -> (B, num_classes)`` float32
        equals :meth:`logits` to float tolerance when ``keep`` is 1; below 1 it is the
        approximate mode (projective-field thresholding,
        :func:`models.incremental.threshold_region`). Call both under ``inference_mode``.

        Raises:
            TypeError: the network cannot be traced with torch.fx.
        """
        mf, amp = self._memory_format, self.amp_dtype
        context = (lambda: torch.autocast(device_type=self.device.type, dtype=amp)
                   if amp is not None else contextlib.nullcontext())
        with context():
            executor = IncrementalExecutor(self.model, x.unsqueeze(0).contiguous(
                memory_format=mf), threshold, grid, keep=keep)

        def logits(batch: torch.Tensor) -> torch.Tensor:
            with context():
                return executor(batch.contiguous(memory_format=mf)).float()

        logits.executor = executor  # type: ignore[attr-defined]  (its MAC counts)
        return logits

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (B, num_classes)."""
        return torch.softmax(self.logits(x), dim=1)

    def class_name(self, index: int) -> str:
        """Name of class ``index`` (the index as text when names are unknown)."""
        names = self.class_names
        return names[index] if names is not None and 0 <= index < len(names) else str(index)
