"""The reference maps used to judge real methods."""

from __future__ import annotations

import numpy as np
import torch

from models.registry import get_spec
from models.tiny import TinyVideoNet
from transforms.methods import get_method
from transforms.scoring import Scorer


def _scorer() -> Scorer:
    return Scorer(TinyVideoNet(4), get_spec("tiny"), torch.device("cpu"))


def test_random_map_is_seeded_by_the_clip_content():
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    m = get_method("random")
    a = m.explain(_scorer(), x, 0, None, 8)
    b = m.explain(_scorer(), x.clone(), 0, None, 1)
    c = m.explain(_scorer(), x + 1, 0, None, 8)
    assert a.forward_passes == 0 and a.saliency.shape == (4, 16, 16)
    assert torch.equal(a.saliency, b.saliency) and not torch.equal(a.saliency, c.saliency)


def test_center_map_peaks_in_the_middle_of_every_frame():
    sal = get_method("center").explain(_scorer(), torch.zeros(3, 3, 17, 21), 0, None, 8).saliency
    for f in sal.numpy():
        assert np.unravel_index(np.argmax(f), f.shape) == (8, 10)
