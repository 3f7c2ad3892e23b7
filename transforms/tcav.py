"""Video-TCAV maths: layer activations and class gradients, CAVs, scores, significance.

TCAV (Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with
Concept Activation Vectors", ICML 2018) for video as in Saha et al., "Exploring Explainability
in Video Action Recognition" (arXiv 2404.09067); concept proposals as in ACE (Ghorbani et al.,
"Towards Automatic Concept-based Explanations", NeurIPS 2019). Pure functions, no Beam; the
stages that call them are :mod:`transforms.tcav_stages`.

Conventions (tensor shapes):
    layer activation  (B, C, T, H, W) of a 5-D layer.
    pooled features   (B, D): ``pool="space"`` → mean over H, W, D = C·T (motion lives in T);
                      ``pool="none"`` → flattened, D = C·T·H·W.
    gradients         (B, K, D) of K class *logits* with respect to the layer's activation,
                      summed over space for ``pool="space"``: the derivative of the logit
                      along a CAV ``v`` (C·T) broadcast over space is ``Σ_ct v_ct Σ_hw g_cthw``.
    CAV               (D,) unit vector pointing from the random set towards the concept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

POOLS = ("space", "none")
CLASSIFIERS = ("sgd", "logistic")


# ------------------------------------------------------------------ activations and gradients


def pool_features(x: torch.Tensor, pool: str, reduce: str) -> torch.Tensor:
    """(B, C, T, H, W) → (B, D): ``reduce`` (``mean`` for activations, ``sum`` for gradients)
    over H, W for ``pool="space"``; flattened for ``pool="none"``."""
    if x.ndim != 5:
        raise ValueError(f"expected a 5-D (B, C, T, H, W) layer output, got {tuple(x.shape)}")
    if pool == "none":
        return x.flatten(1)
    if pool != "space":
        raise ValueError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")
    return (x.mean if reduce == "mean" else x.sum)(dim=(3, 4)).flatten(1)


class _Capture:
    """Forward hooks keeping the outputs of named modules (the returned value is a clone, so
    in-place operations downstream never touch the captured tensor)."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [model.get_submodule(name).register_forward_hook(self._hook(name))
                        for name in layers]

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self.outputs[name] = output
            return output.clone()
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def layer_features(model: nn.Module, logits_fn: Callable[[torch.Tensor], torch.Tensor],
                   x: torch.Tensor, layers: Sequence[str], classes: Sequence[int] = (),
                   pool: str = "space") -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Pooled activations of ``layers`` and, for ``classes``, the pooled class-logit gradients.

    One forward; one backward per class (each clip's logit depends only on its own input, so
    the gradient of the batch's summed logit is every clip's own gradient).

    Args:
        model: the network whose modules ``layers`` name (hooks are removed afterwards).
        logits_fn: (B, 3, T, H, W) → (B, num_classes), running ``model``.
        x: the input batch (B, 3, T, H, W).
        classes: class indices K (empty: activations only, no backward pass).

    Returns:
        layer → (activations float32 (B, D), gradients float32 (B, K, D) or None).
    """
    cap = _Capture(model, layers)
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(bool(classes))
            logits = logits_fn(x)
            outs = [cap.outputs[name] for name in layers]
            bad = [n for n, o in zip(layers, outs, strict=True) if o.ndim != 5]
            if bad:
                raise ValueError(f"layer {bad[0]!r} is not 5-D (output {tuple(outs[0].shape)})")
            grads: list[list[torch.Tensor]] = [[] for _ in layers]
            for k in classes:
                gs = torch.autograd.grad(logits[:, k].sum(), outs, retain_graph=True)
                for i, g in enumerate(gs):
                    grads[i].append(pool_features(g.float(), pool, "sum"))
    finally:
        cap.close()
    result = {}
    for i, name in enumerate(layers):
        acts = pool_features(outs[i].detach().float(), pool, "mean").cpu().numpy()
        g = (torch.stack(grads[i], dim=1).cpu().numpy() if classes else None)
        result[name] = (acts, g)
    return result


def five_d_layers(model: nn.Module, logits_fn: Callable[[torch.Tensor], torch.Tensor],
                  x: torch.Tensor) -> list[str]:
    """Names of the modules whose output is 5-D, in execution order (one dry forward)."""
    seen: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            if isinstance(out, torch.Tensor) and out.ndim == 5 and name not in seen:
                seen.append(name)
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits_fn(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def is_degenerate(grads: np.ndarray, rtol: float = 1e-4) -> bool:
    """True when every clip has the same class gradient (B, K, D): then the directional
    derivative along any CAV has one sign for all clips and each run scores 0 or 1 — the case
    of a layer followed only by global pooling and a linear layer."""
    if grads.shape[0] < 2:
        return False
    scale = float(np.abs(grads).max()) or 1.0
    return bool(np.abs(grads - grads[:1]).max() <= rtol * scale)


# ------------------------------------------------------------------ CAVs and scores


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from the text of ``parts`` (a re-run with the same parts is identical)."""
    text = "|".join(str(p) for p in parts)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass(frozen=True)
class Cav:
    """A concept activation vector.

    Attributes:
        vector: float64 (D,) unit normal of the separating hyperplane, towards the concept.
        accuracy: accuracy on the held-out third of the balanced sets.
    """

    vector: np.ndarray
    accuracy: float


def train_cav(concept: np.ndarray, random: np.ndarray, seed: int, classifier: str = "sgd",
              holdout: float = 1 / 3) -> Cav:
    """Train a CAV: concept (n, D) vs random (m, D) features, cut to equal size.

    ``sgd``: scikit-learn ``SGDClassifier`` (hinge loss, alpha 0.01, max_iter 1000, tol 1e-3:
    TCAV's defaults); ``logistic``: ``LogisticRegression``. A third of each set (at least one
    clip) is held out for the accuracy.
    """
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    n = min(len(concept), len(random))
    if n < 2:
        raise ValueError(f"a CAV needs at least 2 clips per side, got {len(concept)} and "
                         f"{len(random)}")
    rng = np.random.default_rng(seed)
    pos = concept[rng.permutation(len(concept))[:n]]
    neg = random[rng.permutation(len(random))[:n]]
    n_test = max(1, int(round(n * holdout)))
    x_train = np.concatenate([pos[n_test:], neg[n_test:]])
    y_train = np.r_[np.ones(n - n_test), np.zeros(n - n_test)]
    x_test = np.concatenate([pos[:n_test], neg[:n_test]])
    y_test = np.r_[np.ones(n_test), np.zeros(n_test)]
    if classifier == "sgd":
        clf = SGDClassifier(loss="hinge", alpha=0.01, max_iter=1000, tol=1e-3,
                            random_state=seed)
    elif classifier == "logistic":
        clf = LogisticRegression(max_iter=1000, random_state=seed)
    else:
        raise ValueError(f"--cav-classifier must be one of {', '.join(CLASSIFIERS)}, got "
                         f"{classifier!r}")
    clf.fit(x_train, y_train)
    w = np.asarray(clf.coef_, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(w))
    vector = w / norm if norm > 0 else w
    return Cav(vector, float(clf.score(x_test, y_test)))


def directional_derivatives(grads: np.ndarray, cav: np.ndarray) -> np.ndarray:
    """(N, D) class-logit gradients · (D,) CAV → (N,) derivatives of the logit along the CAV."""
    return np.asarray(grads, dtype=np.float64) @ np.asarray(cav, dtype=np.float64)


def tcav_score(derivatives: np.ndarray) -> tuple[float, float]:
    """(score, magnitude) of (N,) directional derivatives.

    score: the fraction that is positive (TCAV's score; captum's ``sign_count``);
    magnitude: Σ positive / Σ |·| (the share of the derivatives' mass that is positive, as
    TCAV's magnitude score is defined), 0 when all are 0.
    """
    d = np.asarray(derivatives, dtype=np.float64)
    if d.size == 0:
        return float("nan"), float("nan")
    total = float(np.abs(d).sum())
    return float((d > 0).mean()), (float(d[d > 0].sum()) / total if total > 0 else 0.0)


# ------------------------------------------------------------------ runs and significance


@dataclass(frozen=True)
class RunDraw:
    """The clips of one run (indices into the concept's clips and into the random pool).

    Attributes:
        concept: subsample of the concept's clips.
        random: the random set the concept is compared with (same size).
        null_a, null_b: two disjoint fresh random sets for the random-vs-random null.
    """

    concept: np.ndarray
    random: np.ndarray
    null_a: np.ndarray
    null_b: np.ndarray


def draw_runs(n_concept: int, n_random: int, runs: int, seed: int,
              fraction: float = 2 / 3) -> list[RunDraw]:
    """R runs: each a fresh subsample of the concept (``fraction`` of it, at least 2 clips),
    a fresh random set of the same size, and two disjoint fresh random sets for the null.

    Resampling the concept matters: with a fixed concept set, a concept made of random clips
    gets the same idiosyncratic CAV in every run and passes the t-test far more often than α.

    Raises:
        ValueError: the random pool has fewer than twice the subsample size.
    """
    k = max(2, int(round(fraction * n_concept)))
    if n_random < 2 * k:
        raise ValueError(f"the random pool has {n_random} clips; {runs} runs with {k}-clip "
                         f"sets need at least {2 * k}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(runs):
        concept = np.sort(rng.choice(n_concept, size=k, replace=False))
        random = np.sort(rng.choice(n_random, size=k, replace=False))
        both = rng.choice(n_random, size=2 * k, replace=False)
        out.append(RunDraw(concept, random, np.sort(both[:k]), np.sort(both[k:])))
    return out


@dataclass(frozen=True)
class Significance:
    """A two-sided Welch t-test of the concept's R scores against the null's R scores.

    Attributes:
        t, p: the test's statistic and p-value (p = 1 when both samples are constant and equal).
        m: the Bonferroni count; ``significant``: p < alpha / m.
        direction: ``positive`` (mean score above the null's), ``negative`` or ``none``.
    """

    t: float
    p: float
    m: int
    alpha: float
    significant: bool
    direction: str


def welch(scores: Sequence[float], null: Sequence[float]) -> tuple[float, float]:
    """Two-sided Welch t-test (scipy ``ttest_ind(equal_var=False)``); (0, 1) when both samples
    are constant and equal (scipy returns nan there), (±inf, 0) when constant and different."""
    from scipy import stats

    a, b = np.asarray(scores, dtype=np.float64), np.asarray(null, dtype=np.float64)
    if a.std() == 0 and b.std() == 0:
        if a.mean() == b.mean():
            return 0.0, 1.0
        return float(np.sign(a.mean() - b.mean()) * np.inf), 0.0
    res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def significance(scores: Sequence[float], null: Sequence[float], alpha: float, m: int
                 ) -> Significance:
    """Welch test with Bonferroni correction over ``m`` tests (``p < alpha / m``)."""
    if m < 1:
        raise ValueError(f"Bonferroni m must be >= 1, got {m}")
    t, p = welch(scores, null)
    passed = p < alpha / m
    diff = float(np.mean(scores) - np.mean(null))
    direction = "none" if not passed else ("positive" if diff > 0 else "negative")
    return Significance(t, p, m, alpha, bool(passed), direction)


@dataclass(frozen=True)
class ConceptRuns:
    """R runs of one (concept, layer) for every tested class.

    Attributes:
        scores, magnitudes: float (R, K) per run and class; ``null``: float (R, K).
        accuracies: float (R,) held-out accuracies of the concept's CAVs.
    """

    scores: np.ndarray
    magnitudes: np.ndarray
    null: np.ndarray
    accuracies: np.ndarray


def concept_runs(concept: np.ndarray, random: np.ndarray, grads: Sequence[np.ndarray],
                 draws: Sequence[RunDraw], seed: int, classifier: str = "sgd") -> ConceptRuns:
    """Scores of a concept's R runs and of R random-vs-random runs.

    Args:
        concept: (n, D) features of the concept's clips; random: (M, D) of the random pool.
        grads: per tested class k, (N_k, D) class-logit gradients of that class's clips
            (computed once, reused for every CAV).
        draws: from :func:`draw_runs`; ``seed``: base seed (run r uses ``seed + r``).
    """
    r_, k_ = len(draws), len(grads)
    scores, mags, null = (np.zeros((r_, k_)) for _ in range(3))
    accs = np.zeros(r_)
    for r, d in enumerate(draws):
        cav = train_cav(concept[d.concept], random[d.random], seed + r, classifier)
        ref = train_cav(random[d.null_a], random[d.null_b], seed + r + 7919, classifier)
        accs[r] = cav.accuracy
        for k, g in enumerate(grads):
            scores[r, k], mags[r, k] = tcav_score(directional_derivatives(g, cav.vector))
            null[r, k] = tcav_score(directional_derivatives(g, ref.vector))[0]
    return ConceptRuns(scores, mags, null, accs)


# ------------------------------------------------------------------ concept clips


def static_twin(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) → the middle frame repeated T times (no motion, same appearance)."""
    return np.repeat(frames[len(frames) // 2][None], len(frames), axis=0)


def region_clip(frames: np.ndarray, keep: np.ndarray, fill: Sequence[float]) -> np.ndarray:
    """Keep only ``keep`` (bool (T, H, W)) of uint8 (T, H, W, 3) frames; the rest becomes the
    ``fill`` colour (RGB on [0, 1]: the dataset mean, i.e. 0 in normalised input)."""
    colour = np.round(np.asarray(fill, dtype=np.float64) * 255).astype(np.uint8)
    return np.where(keep[..., None], frames, colour).astype(np.uint8)


def tube_region(boxes: np.ndarray, tube: int, partners: np.ndarray, frame_size: tuple[int, int]
                ) -> np.ndarray:
    """bool (T, H, W): the boxes of ``tube`` and its co-moving partners (AOSA's integrated mask).

    Args:
        boxes: int (N, T, 4) ``[x0, y0, x1, y1)`` per tube and frame.
        partners: int (N, K) partner indices.
    """
    height, width = frame_size
    keep = np.zeros((boxes.shape[1], height, width), dtype=bool)
    for i in (tube, *partners[tube].tolist()):
        for t, (x0, y0, x1, y1) in enumerate(boxes[i]):
            keep[t, y0:y1, x0:x1] = True
    return keep


def top_moving_tubes(tracks: np.ndarray, valid: np.ndarray, count: int, min_distance: float
                     ) -> list[int]:
    """Up to ``count`` tubes with the longest on-screen paths, each starting at least
    ``min_distance`` px from the ones already picked (so one object is not picked twice).

    Args:
        tracks: float (N, T, 2) anchor positions; valid: bool (N, T).
    """
    steps = np.linalg.norm(np.diff(tracks, axis=1), axis=2) * valid[:, 1:]
    length = steps.sum(axis=1)
    picked: list[int] = []
    for i in np.argsort(-length, kind="stable"):
        if length[i] <= 0 or len(picked) >= count:
            break
        if all(np.linalg.norm(tracks[i, 0] - tracks[j, 0]) >= min_distance for j in picked):
            picked.append(int(i))
    return picked


def cluster_concepts(embeddings: np.ndarray, k: int, members: int, seed: int
                     ) -> list[np.ndarray]:
    """k-means (scikit-learn) of (P, D) proposal embeddings into ``k`` clusters; per cluster
    the indices of its ``members`` proposals closest to the centre (fewer when it is small)."""
    from sklearn.cluster import KMeans

    if len(embeddings) < k:
        raise ValueError(f"--discover {k}: only {len(embeddings)} tube proposals to cluster")
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(embeddings)
    out = []
    for c in range(k):
        idx = np.flatnonzero(km.labels_ == c)
        dist = np.linalg.norm(embeddings[idx] - km.cluster_centers_[c], axis=1)
        out.append(idx[np.argsort(dist, kind="stable")][:members])
    return out
