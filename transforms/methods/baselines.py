"""Reference maps that explain nothing, to score real methods against.

``random``: uniform noise, seeded by the clip's content (the same clip gets the same map).
``center``: a centred Gaussian per frame (sigma = a quarter of the smaller side), the
"centre bias" that many datasets reward.
Both cost no network passes.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from transforms.methods.base import Explanation, Method, register_method
from transforms.metrics import center_bias_map, random_map
from transforms.perturbation import PerturbationEngine
from transforms.tubes import Tubes


def content_seed(x: torch.Tensor) -> int:
    """A seed derived from the clip's values (stable across runs and batch sizes)."""
    return zlib.crc32(x.detach().float().cpu().numpy().tobytes())


class _ReferenceMap(Method):
    """A map computed from the clip's shape (and values) alone: no network pass."""

    uses_network = False
    reads = ()  # the clip's shape (and values) only

    def make_map(self, x: torch.Tensor) -> np.ndarray:
        """float32 (T, H, W) for the normalised clip ``x`` (3, T, H, W)."""
        raise NotImplementedError

    def explain(self, engine: PerturbationEngine, tubes: Tubes | None) -> Explanation:
        return Explanation(torch.from_numpy(self.make_map(engine.x).astype(np.float32)))


@register_method("random")
class RandomMap(_ReferenceMap):
    name = "random"

    def make_map(self, x: torch.Tensor) -> np.ndarray:
        return random_map(tuple(x.shape[1:]), content_seed(x))


@register_method("center")
class CenterMap(_ReferenceMap):
    name = "center"

    def make_map(self, x: torch.Tensor) -> np.ndarray:
        return center_bias_map(tuple(x.shape[1:]))
