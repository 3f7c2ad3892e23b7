"""The reference maps used to judge real methods."""

from __future__ import annotations

import numpy as np
import torch

from models.registry import get_spec
from models.tiny import TinyVideoNet
from transforms.methods import get_method
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer


def _engine(x: torch.Tensor, batch_size: int = 8) -> PerturbationEngine:
    scorer = Scorer(TinyVideoNet(4), get_spec("tiny"), torch.device("cpu"))
    return PerturbationEngine(scorer, x, 0, batch_size=batch_size)


def test_random_map_is_seeded_by_the_clip_content():
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    m = get_method("random")
    engine = _engine(x)
    a = m.explain(engine, None)
    b = m.explain(_engine(x.clone(), 1), None)
    c = m.explain(_engine(x + 1), None)
    assert engine.passes.forward == 1 and not m.uses_network  # only the shared clean forward
    assert a.saliency.shape == (4, 16, 16)
    assert torch.equal(a.saliency, b.saliency) and not torch.equal(a.saliency, c.saliency)


def test_center_map_peaks_in_the_middle_of_every_frame():
    sal = get_method("center").explain(_engine(torch.zeros(3, 3, 17, 21)), None).saliency
    for f in sal.numpy():
        assert np.unravel_index(np.argmax(f), f.shape) == (8, 10)
