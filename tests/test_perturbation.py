"""The perturbation engine: known answers for the loop and the fills, pass counting, the
gradient path, batching invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.registry import get_spec
from transforms.perturbation import (
    PerturbationEngine,
    blur_fill,
    local_mean_fill,
    perturbed_scores,
    target_score,
)
from transforms.scoring import Scorer


class LinearNet(nn.Module):
    """logit_c = <w_c, x> with fixed weights: gradients are known exactly."""

    def __init__(self, shape=(3, 2, 4, 4), classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(classes, *shape, generator=g))

    def forward(self, x):
        return torch.einsum("bcthw,kcthw->bk", x, self.w)


def engine_for(net: nn.Module, x: torch.Tensor, target: int = 1, **kw) -> PerturbationEngine:
    return PerturbationEngine(Scorer(net, get_spec("tiny"), torch.device("cpu")), x, target,
                              **kw)


def test_perturbed_scores_builds_where_mask_fill_source():
    source = torch.ones(3, 2, 2, 2)
    masks = [torch.tensor([[[[True, False], [False, False]]] * 2]),  # (1, T=2, 2, 2)
             torch.zeros(2, 2, 2, 2, dtype=torch.bool)]
    masks[1][1] = True  # everything replaced in the second clip of the second batch
    seen = []

    def score(batch):
        seen.append(batch.clone())
        return batch.sum(dim=(1, 2, 3, 4))

    out = list(perturbed_scores(source, 5.0, masks, score))
    assert [tuple(s.shape) for _, s in out] == [(1,), (2,)]
    # 24 voxels; 2 (one per frame) × 3 channels replaced by 5 → 24 - 6 + 30.
    assert out[0][1].tolist() == [48.0]
    assert out[1][1].tolist() == [24.0, 120.0]
    assert seen[0][0, :, 0, 0, 0].tolist() == [5.0, 5.0, 5.0]


def test_perturbed_scores_rejects_bad_masks():
    with pytest.raises(ValueError, match="mask batch must be"):
        list(perturbed_scores(torch.ones(3, 2, 2, 2), 0.0, [torch.zeros(1, 2, 3, 2).bool()],
                              lambda b: b.sum(dim=(1, 2, 3, 4))))


def test_local_mean_fill_equals_a_naive_loop():
    x = torch.randn(3, 2, 7, 9, generator=torch.Generator().manual_seed(0))
    for window in (1, 3, 4):
        got = local_mean_fill(x, window).numpy()
        before, after = window // 2, window - 1 - window // 2
        want = np.empty_like(got)
        xn = x.numpy()
        for c in range(3):
            for t in range(2):
                for i in range(7):
                    for j in range(9):
                        patch = xn[c, t, max(0, i - before):i + after + 1,
                                   max(0, j - before):j + after + 1]
                        want[c, t, i, j] = patch.mean()
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_blur_fill_keeps_a_constant_and_never_mixes_frames():
    x = torch.zeros(3, 2, 16, 16)
    x[:, 1] = 2.0
    out = blur_fill(x, 2.0)
    assert torch.allclose(out[:, 0], torch.zeros(3, 16, 16))
    assert torch.allclose(out[:, 1], torch.full((3, 16, 16), 2.0))


def test_target_score_prob_and_logit():
    logits = torch.tensor([[0.0, np.log(3.0)]])
    assert target_score(logits, 1, "prob").item() == pytest.approx(0.75)
    assert target_score(logits, 1, "logit").item() == pytest.approx(np.log(3.0))
    with pytest.raises(ValueError, match="unknown score"):
        target_score(logits, 1, "energy")


def test_engine_counts_passes_and_shares_the_clean_forward():
    net = LinearNet()
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    engine = engine_for(net, x, batch_size=3)
    assert engine.passes.forward == 1 and engine.passes.backward == 0
    with torch.no_grad():
        want = torch.softmax(net(x[None]), 1)[0, 1].item()
    assert engine.base_score == pytest.approx(want, abs=1e-6)
    masks = [torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(2)) > 0.5,
             torch.ones(2, 2, 4, 4, dtype=torch.bool)]
    scores = torch.cat([s for _, s in engine.perturb(masks)])
    assert engine.passes.forward == 1 + 5
    with torch.no_grad():
        ref = torch.softmax(net(torch.where(torch.cat(masks)[:, None], 0.0, x)), 1)[:, 1]
    torch.testing.assert_close(scores, ref, atol=1e-6, rtol=0)
    # Another batch size gives the same scores (batching never changes results).
    other = engine_for(net, x, batch_size=1)
    torch.testing.assert_close(torch.cat([s for _, s in other.perturb(masks)]), scores,
                               atol=1e-6, rtol=0)


def test_gradient_path_is_exact_on_a_linear_network():
    net = LinearNet()
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    engine = engine_for(net, x, target=2, score="logit", batch_size=4)
    batch = torch.stack([x, 2 * x])
    scores, grads = engine.score_with_grad(batch)
    assert engine.passes.forward == 1 + 2 and engine.passes.backward == 2
    torch.testing.assert_close(grads, net.w[2].detach().expand(2, -1, -1, -1, -1))
    torch.testing.assert_close(scores, torch.einsum("bcthw,cthw->b", batch, net.w[2].detach()))
    assert all(not p.requires_grad for p in net.parameters())  # the Scorer froze the weights


def test_the_engine_switches_its_score_without_another_forward():
    """``use_score``: each method of a run measures its own score on one engine."""
    net = LinearNet()
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    engine = engine_for(net, x, target=2)
    with torch.no_grad():
        logits = net(x[None])[0]
    prob = engine.base_score
    engine.use_score("logit")
    assert engine.base_score == pytest.approx(float(logits[2]), abs=1e-5)
    scores, grads = engine.score_with_grad(x[None])
    torch.testing.assert_close(grads[0], net.w[2].detach())  # the logit's gradient
    engine.use_score("prob")
    assert engine.base_score == prob == pytest.approx(float(torch.softmax(logits, 0)[2]))
    assert engine.passes.forward == 1 + 1  # the clean forward once, the gradient's
    with pytest.raises(ValueError, match="unknown score 'probability'"):
        engine.use_score("probability")


def test_fills_are_cached_per_clip_and_validated():
    x = torch.randn(3, 2, 8, 8)
    engine = engine_for(LinearNet((3, 2, 8, 8)), x)
    assert engine.fill("mean") == 0.0
    a = engine.fill("local_mean", window=3)
    assert engine.fill("local_mean", window=3) is a
    assert engine.fill("local_mean", window=5) is not a
    with pytest.raises(ValueError, match="unknown fill"):
        engine.fill("noise")
    with pytest.raises(ValueError, match="out of range"):
        engine_for(LinearNet((3, 2, 8, 8)), x, target=7)
