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
from transforms.scoring import Scorer
from transforms.tubes import Tubes


def content_seed(x: torch.Tensor) -> int:
    """A seed derived from the clip's values (stable across runs and batch sizes)."""
    return zlib.crc32(x.detach().float().cpu().numpy().tobytes())


@register_method("random")
class RandomMap(Method):
    name = "random"

    def __init__(self, *_args) -> None:
        pass

    def explain(self, scorer: Scorer, x: torch.Tensor, target: int, tubes: Tubes | None,
                batch_size: int) -> Explanation:
        shape = tuple(x.shape[1:])
        return Explanation(torch.from_numpy(random_map(shape, content_seed(x))), 0)


@register_method("center")
class CenterMap(Method):
    name = "center"

    def __init__(self, *_args) -> None:
        pass

    def explain(self, scorer: Scorer, x: torch.Tensor, target: int, tubes: Tubes | None,
                batch_size: int) -> Explanation:
        sal = center_bias_map(tuple(x.shape[1:])).astype(np.float32)
        return Explanation(torch.from_numpy(sal), 0)
