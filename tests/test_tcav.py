"""Video-TCAV maths (transforms/tcav.py): exact plumbing answers and independent oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from transforms import tcav


class LinearHead(nn.Module):
    """x → ``feat`` (a 1×1×1 conv: the tested layer) → logits = W · flatten(feat) + b: the
    logit is linear in the layer's activations, so its gradient there is W, for every clip."""

    def __init__(self, classes: int = 3, shape: tuple[int, ...] = (4, 3, 5, 5)) -> None:
        super().__init__()
        self.feat = nn.Conv3d(3, shape[0], 1)
        self.head = nn.Linear(int(np.prod(shape)), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feat(x).flatten(1))


class Small(nn.Module):
    """A non-linear net: the gradient at ``block`` differs from clip to clip."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.block2 = nn.Sequential(nn.Conv3d(4, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block2(self.block(x)).mean(dim=(2, 3, 4)))


def _batch(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 3, 5, 5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pool", ["space", "none"])
def test_directional_derivative_is_w_dot_v_on_a_linear_head(pool: str) -> None:
    torch.manual_seed(0)
    net = LinearHead().eval()
    feats = tcav.layer_features(net, net, _batch(), ["feat"], [0, 2], pool)
    acts, grads = feats["feat"]
    w = net.head.weight.detach().numpy().reshape(3, 4, 3, 5, 5)  # (K, C, T, H, W)
    w = w.sum(axis=(3, 4)).reshape(3, -1) if pool == "space" else w.reshape(3, -1)
    assert acts.shape == (6, w.shape[1]) and grads.shape == (6, 2, w.shape[1])
    v = np.random.default_rng(1).normal(size=w.shape[1])
    for j, k in enumerate([0, 2]):
        np.testing.assert_allclose(tcav.directional_derivatives(grads[:, j], v),
                                   np.full(6, w[k] @ v), rtol=1e-5, atol=1e-6)
    assert tcav.is_degenerate(grads)  # same gradient for every clip: each score is 0 or 1


def test_space_pooled_derivative_is_the_derivative_along_the_broadcast_cav() -> None:
    torch.manual_seed(0)
    net = Small().eval()
    x = _batch(4)
    _, grads = tcav.layer_features(net, net, x, ["block"], [1], "space")["block"]
    v = torch.randn(4 * 3, generator=torch.Generator().manual_seed(2))
    assert not tcav.is_degenerate(grads)
    # finite difference of the logit when the layer's output moves by eps · v over space
    eps = 1e-3
    out = {}

    def shift(_m, _i, o):
        return o + eps * v.view(1, 4, 3, 1, 1)
    with torch.no_grad():
        base = net(x)[:, 1]
        h = net.block.register_forward_hook(shift)
        moved = net(x)[:, 1]
        h.remove()
    out = ((moved - base) / eps).numpy()
    np.testing.assert_allclose(tcav.directional_derivatives(grads[:, 0], v.numpy()), out,
                               rtol=2e-2, atol=2e-3)


def test_score_equals_captum_sign_count(tmp_path) -> None:
    from captum.concept import TCAV, Classifier, Concept

    torch.manual_seed(0)
    net = Small().eval()
    x = _batch(10, seed=3)
    _, grads = tcav.layer_features(net, net, x, ["block"], [1], "none")["block"]
    cav = grads[0, 0] - grads[:, 0].mean(axis=0)  # a direction the clips disagree about
    cav /= np.linalg.norm(cav)

    class Fixed(Classifier):  # captum trains nothing: it scores our CAV
        def __init__(self) -> None:
            pass

        def train_and_eval(self, dataloader, **kwargs):
            return {"accs": torch.tensor(1.0)}

        def weights(self):
            w = torch.tensor(cav, dtype=torch.float32)
            return torch.stack([w, -w])

        def classes(self):
            return [0, 1]

    def loader(seed):
        return torch.utils.data.DataLoader([_batch(1, seed)[0] for _ in range(4)], batch_size=4)
    concepts = [Concept(0, "concept", loader(5)), Concept(1, "random", loader(6))]
    captum = TCAV(net, ["block"], classifier=Fixed(), save_path=str(tmp_path))
    result = captum.interpret(x, [concepts], target=1)
    sign_count = float(next(iter(result.values()))["block"]["sign_count"][0])
    ours, _ = tcav.tcav_score(tcav.directional_derivatives(grads[:, 0], cav))
    assert ours == pytest.approx(sign_count, abs=1e-7)
    assert 0 < ours < 1  # a real mix of signs, not a degenerate 0 / 1


def test_p_values_equal_scipy_and_bonferroni_uses_m() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 1, 20), rng.uniform(0.3, 0.8, 20)
    ref = stats.ttest_ind(a, b, equal_var=False)
    sig = tcav.significance(a, b, 0.05, m=1)
    assert sig.t == pytest.approx(ref.statistic) and sig.p == pytest.approx(ref.pvalue)
    p = sig.p
    assert tcav.significance(a, b, 0.05, m=int(0.05 / p) + 1).significant is False
    assert tcav.significance(a, b, 0.05, m=max(1, int(0.05 / p) - 1)).significant is (
        p < 0.05 / max(1, int(0.05 / p) - 1))
    low = tcav.significance(1 - a, b, 0.05, m=3)
    assert low.significant and low.direction == "negative" and low.m == 3
    assert tcav.significance(a, b, 0.05, 3).direction == "positive"
    assert tcav.welch([0.5] * 5, [0.5] * 5) == (0.0, 1.0)


def test_cav_points_to_the_concept_and_runs_are_reproducible() -> None:
    rng = np.random.default_rng(0)
    direction = np.zeros(16)
    direction[3] = 1.0
    concept = rng.normal(size=(30, 16)) + 3 * direction
    random = rng.normal(size=(30, 16))
    cav = tcav.train_cav(concept, random, seed=1)
    assert cav.accuracy >= 0.75 and cav.vector[3] > 0.8  # Bayes accuracy: Φ(1.5) = 0.93
    assert np.linalg.norm(cav.vector) == pytest.approx(1.0)
    lr = tcav.train_cav(concept, random, seed=1, classifier="logistic")
    assert lr.vector[3] > 0.8
    again = tcav.train_cav(concept, random, seed=1)
    np.testing.assert_array_equal(cav.vector, again.vector)
    draws = tcav.draw_runs(12, 40, 5, seed=tcav.derive_seed("c", "dynamic", "block2"))
    for d in draws:
        assert len(d.concept) == 8 == len(d.random) == len(d.null_a) == len(d.null_b)
        assert not set(d.null_a) & set(d.null_b)
    assert len({tuple(d.concept) for d in draws}) > 1  # the concept is resampled
    with pytest.raises(ValueError, match="random pool has 10 clips"):
        tcav.draw_runs(12, 10, 5, seed=0)


def test_static_twin_and_tube_region() -> None:
    frames = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    twin = tcav.static_twin(frames)
    assert (twin == frames[2]).all() and twin.shape == frames.shape
    boxes = np.zeros((3, 5, 4), np.int32)
    boxes[0, :, :] = [0, 0, 2, 2]
    boxes[2, :, :] = [2, 2, 4, 4]
    keep = tcav.tube_region(boxes, 0, np.array([[2], [0], [0]]), (4, 4))
    assert keep.sum() == 5 * 8
    clip = tcav.region_clip(frames, keep, (0.5, 0.5, 0.5))
    assert (clip[~keep] == 128).all() and (clip[keep] == frames[keep]).all()
