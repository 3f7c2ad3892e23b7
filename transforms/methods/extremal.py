"""Extremal perturbations for video: ``step`` (STEP), ``fep`` (F-EP) and ``ep`` (plain).

All three run one optimiser (:func:`optimise_masks`): for each area a of ``ep_areas`` a smooth
spatio-temporal *preservation* mask m_a (T, H, W) with values in [0, 1] such that the preserved
clip keeps the target class while m_a covers a fraction a of the clip (Fong et al.,
"Understanding Deep Networks via Extremal Perturbations and Smooth Masks", ICCV 2019; for video
Wang et al., "Spatio-Temporal Perturbations for Video Attribution", TCSVT 2021 = STEP; Lin et
al., "Gradient Frequency Modulation for Visually Explaining Video Understanding Models", 2021 =
F-EP). The A = len(areas) preserved clips go through the network as ONE batch (split into
``engine.batch_size`` chunks only when A is larger). ``ep`` is the plain method both papers
extend, registered so that the evaluation table can check F-EP's claim against it.

Design (reference = the STEP authors' public code, github.com/shinkyo0513/
Spatio-Temporal-Perturbations-for-Video-Attribution, for Wang et al. 2021):

* **Mask** (:func:`upsample_mask`). Parameters p (A, T, h, w): one low-resolution grid per
  frame, h = ceil(H / 8), w = ceil(W / 8) (``step`` 8 px: close to the reference's 7-px step at
  112 px, 16 cells a side, and 8 cells a side for the 64-px synthetic clips). The mask is p
  upsampled by trilinear interpolation (``align_corners=False``; T stays T, so each frame is
  interpolated bilinearly). Values stay in [0, 1] by clamping p after every step (projected
  gradient, as torchray and the reference; a sigmoid never reaches 0 or 1); p starts at 1
  (everything preserved), as the reference. The reference shapes masks with Fong et al.'s
  smooth-max of Gaussian bumps (σ 11 px at 112 px); bilinear interpolation is the simpler
  smooth upsampling (features ≥ 8 px, linear transitions).
* **Perturbation** (:func:`preserve`): x̃ = m ⊙ x + (1 − m) ⊙ b. By default (no ``--fill``) b
  is the engine's spatial Gaussian blur with σ = 20 px × H / 112: the reference's largest
  blur (20 px at 112 px) scaled to the clip (the project's ``--fill-sigma`` default, 5 px at
  112 px, leaves the synthetic objects recognisable: nothing to localise). The reference
  blends 8 levels of a blur pyramid (m = 0.5 → σ ≈ 10 px); the linear blend equals it at
  m ∈ {0, 1}, needs one fill, and works with any configured ``--fill`` (``mean``,
  ``local_mean``, ``blur`` with ``--fill-sigma``).
* **Objective** per area, minimised (:func:`reward_loss` + :func:`regulariser`)::

      L_a = −z_target(x̃_a) + λ_t ‖sort(vec m_a) − r_a‖² / N  [+ λ_t S(m_a)  for step]

  z the logit (torchray's ``simple_reward``, Fong et al.'s objective), N = T·H·W, r_a the sorted
  reference vector with round(a·N) trailing ones (:func:`area_reference`,
  :func:`area_penalty`). *Deviation:* the STEP code's reward is −log p (softmax probability);
  on ``synth_small3d`` it never localised the object (docs/METHODS.md has the figures): log p
  saturates while p ≈ 1, so the area term shrinks the mask uniformly before the network's
  gradient matters. The reward is therefore the logit by default, whatever ``--score`` is;
  ``--ep-reward prob`` is the STEP code's −log p (where p is far from 1, as on real footage,
  it does not saturate); the reported scores use the engine's score. Ties in the sort (p = 1
  everywhere at the start, clamped voxels at exactly 0 or 1) are broken by a random
  permutation per iteration from a generator seeded with ``seed`` (the reference shuffles per
  iteration too): deterministic.
  λ_t = 300 · 1.0008668^t (reference: λ doubles every 800 iterations; ×1.09 over our 100 CPU
  iterations). ``--ep-area-gain g`` grows it by g over the whole run instead
  (:func:`area_growth`: g^(t / iterations)); torchray multiplies it by 1.0035 per iteration,
  ×16 over its 800. Not the default: docs/realbench.md, "STEP, EP and F-EP on I3D", has what
  it did on I3D.
* **STEP's smoothness term** S (:func:`temporal_smoothness`): the mean over orders k = 1, 2, 3
  of mean((Δ_t^k m)²), the k-th differences between consecutive frames' masks, weighted by
  the same λ_t from the first iteration: the reference's ``diff_loss``, followed exactly. (The
  version of the reference's ``run_all.py`` we read never passes ``with_diff``, default False,
  but passes ``with_core``: docs/METHODS.md, "STEP, F-EP and EP".)
* **STEP's core term** (:func:`core_penalty`, ``--step-core`` = its weight, 0 = off): the
  reference's ``with_core`` (its ``CoreLossCalulator``, "Old" variant), which its run scripts
  enable (``--perturb_withcore``). Each area's mask is pooled by the mean over a binary
  ellipsoid (:func:`ellipsoid_kernel`: the voxels whose coordinates, evenly spaced over [−1, 1]
  per axis, ends included, have norm ≤ 1) at stride (1, k_y, k_x), no padding
  (:func:`core_pool`); the cells are sorted (ties broken by a seeded permutation, as the
  reference's shuffle) and the top k_a = ceil(a·N / int(0.5236 · k_t·k_y·k_x)) are pushed to 1,
  the others to 0: mean over the top of (c − 1)² plus mean over the rest of c². The
  reference's ellipsoid is 8 key frames of 16 × 11 × 11 px at 112 px (11 px is also its
  stride); here it is scaled to the clip (:func:`core_kernel_shape`: (8, 6, 6) at 16 × 64 ×
  64, (8, 11, 11) at 16 × 112 × 112; an axis of length ≤ 2, which the reference never has,
  sits at the centre so that the kernel is never empty). The reference pools its padded
  masks (the smooth-max generator's margin); ours have no margin. Its weight is constant
  (300 in the reference, not grown like λ_t) and *switched on after the first tenth of the
  iterations* (:func:`core_active`): the reference sets it after its step at iteration 100 of
  the 1000 its run scripts use (1200 for Something-Something), so it acts from iteration 101;
  at our CPU default of 100 iterations the same fraction is iteration 11, whereas "from
  iteration 100" would never act and "from 0" would act while every pooled cell is still 1
  (p starts at 1), when the top cells are a random draw and the term only pushes random
  ellipsoids down before the network's gradient has shaped the mask: the delay's purpose in
  the reference. The same fraction keeps that order at any ``ep_iterations``. Off by default:
  on the synthetic benchmark it does not help (docs/EVALUATION.md, "STEP, F-EP and plain
  extremal perturbation", has the measurements); with it off, ``step`` computes exactly what
  it did before the term existed (tested bit for bit), and ``--step-core`` at its default
  stays out of the config hash.
* **F-EP's modulation** (:func:`dct_lowpass`, :func:`modulate`). Before each step the gradient
  of each area's parameters (T, h, w) *that comes from the network* (the reward's) goes to the
  3-D DCT domain (orthonormal DCT-II), keeps the coefficients with k_t < ceil(f·T), k_y <
  ceil(f·h), k_x < ceil(f·w) (f = ``fep_keep``, default 0.5: the lower half of each axis's
  frequencies), returns by the inverse DCT and is rescaled to its unfiltered L2 norm; the
  regularisers' gradients are then added unfiltered and the optimiser steps. Choices (no public
  F-EP code exists; the paper modulates "gradient maps from the neural network"): only the
  network's gradient is filtered, because filtering the sorted-area gradient too (tried) blurs
  the push that enforces the area (the areas overshoot); the norm is restored so that the
  filter changes the step's direction, not its length (without it the filtered pull of the
  network loses against the area term: lower preserved probabilities); a hard box cut-off
  keeps one parameter; f = 0.25 keeps 2 cosines of an 8-cell axis, too few to place an object
  inside the frame (it never localised on the synthetic clips). The figures behind these
  choices: docs/METHODS.md, "STEP, F-EP and EP". ``fep`` has no smoothness term (``fep`` = ``ep`` +
  modulation), so the pair isolates the modulation. torch has no DCT, and scipy's (scipy is
  installed, for the report) works on host numpy arrays, not on the scoring device's tensors
  inside the optimisation loop, so :func:`dct` / :func:`idct` compute it with ``torch.fft`` (the
  FFT of the even extension; a few lines, exact to float rounding, checked against the cosine
  sums in the tests).
* **Optimiser**: SGD with momentum 0.9 and dampening 0.9 (the reference). Its step
  (:func:`default_lr`, or ``--ep-lr`` as given) is 0.05 (the STEP code's) × max(1, P / 1024)
  for P parameters per mask: the area term's gradient per parameter is 2λ(m − r) / P (the
  penalty is a mean over the clip's voxels, and each parameter spreads over N / P of them),
  and on a network that pools over the clip so is the reward's, so a finer grid takes
  proportionally smaller steps. 1024 is the grid where 0.05 and 100 iterations were verified
  (``synth_small3d``'s 16 × 8 × 8; Fong et al.'s image grid is 32 × 32): coarser grids keep
  0.05, I3D's 16 × 28 × 28 at 224 px takes 0.6125 (at 0.05 its masks stayed at 95-99 % of
  the clip instead of 5-15 %: docs/realbench.md, "STEP, EP and F-EP on I3D"). Its default is
  in the config hash (rows made before it was grid-dependent are recomputed). The
  optimisation runs ``ep_iterations`` steps: 100 by default on the
  CPU (on a synthetic clip 150 and 300 iterations gave nearly the same maps: docs/METHODS.md;
  on the evaluation's clips 300 and 1000 iterations improve no method's metrics by more than
  0.001, and F-EP stays below EP at 100-1000 iterations, cut-offs 0.25-0.75 and learning rates
  0.05 and 0.1: docs/EVALUATION.md, "STEP, F-EP and plain extremal perturbation"); the
  reference runs 1000 (run scripts) to 2000. No jitter (torchray flips every other iteration;
  the STEP code does not).
* **One map** (:func:`combine_masks`): the mean of the A final masks, in [0, 1] (a voxel kept at
  every area scores 1). The reference sums them and divides by the maximum after a per-frame
  Gaussian blur (σ 10 px at 112 px), a visualisation step not done here: it would smooth every
  method's map alike and hide the differences the methods are about.

* **Convergence check** (:func:`unmet_areas`): a mask whose mean is more than 0.1 from its area
  has not met the area constraint (too few iterations, a step too small for the network), and
  the map is returned with a one-line warning that the pipeline logs and counts.

Cost: every iteration forwards and backpropagates A clips (``passes.forward += A``,
``count_backward(A)``): A × ``ep_iterations`` of each per clip; the final masks need no pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from transforms.methods.base import FILL, Explanation, Method, register_method
from transforms.options import Option, at_least, floats, in_range
from transforms.perturbation import PerturbationEngine, target_score
from transforms.tubes import Tubes

# Reference (STEP code) values, except DEFAULT_ITERATIONS (CPU), DEFAULT_STEP (8 px, the
# reference's is 7 px at 112 px) and DEFAULT_FEP_KEEP (ours: no F-EP code exists).
DEFAULT_AREAS = (0.05, 0.1, 0.15)
DEFAULT_ITERATIONS = 100  # CPU default; the reference runs 1000-2000
REFERENCE_ITERATIONS = 1000
DEFAULT_STEP = 8
DEFAULT_FEP_KEEP = 0.5
LEARNING_RATE = 0.05
REFERENCE_PARAMS = 1024  # mask parameters per area where LEARNING_RATE was verified
MOMENTUM = 0.9
AREA_WEIGHT = 300.0
AREA_GROWTH = 1.0008668  # per iteration: λ doubles every 800 iterations
REFERENCE_MAX_BLUR = 20.0  # px at 112 px
# STEP's core term (the reference's ``with_core``): an ellipsoid of CORE_KEY_FRAMES of 16 frames
# x CORE_SIZE x CORE_SIZE px at 112 px, weight 300 (constant), switched on after iteration 100
# of the reference's 1000 (CORE_START: the same fraction of our run).
CORE_WEIGHT = 300.0
CORE_KEY_FRAMES = 8  # of REFERENCE_FRAMES (the reference's default --perturb_num_keyframe)
CORE_SIZE = 11.0  # px at 112 px, also the stride
REFERENCE_FRAMES = 16
CORE_START = 0.1  # fraction of the iterations after which the term is on (reference: 100/1000)
ELLIPSOID_FILL = 0.5236  # the reference's π/6: the ellipsoid's share of its bounding box
DEFAULT_STEP_CORE = 0.0
# A mask whose mean is further than this from its area has not met the area constraint: a
# converged mask is within 0.01-0.03 of it (tests/test_extremal.py, the synthetic clips).
AREA_TOLERANCE = 0.1

EP_ITERATIONS = Option("ep_iterations", int, None, check=at_least(1),
                       help="STEP / F-EP / EP: optimiser iterations (default: the method's CPU "
                            "default)")


def _check_areas(areas: tuple[float, ...] | None, _) -> str | None:
    if areas is None or (areas and all(0 < a < 1 for a in areas)):
        return None
    return f"must be fractions in (0, 1), got {areas}"


EP_AREAS = Option("ep_areas", floats, None, check=_check_areas,
                  help="STEP / F-EP / EP: preserved areas, e.g. 0.05,0.1,0.15 (default: the "
                       "method's)")
FEP_KEEP = Option("fep_keep", float, None, check=in_range(0, 1, "(]"),
                  help="F-EP: fraction of the lowest DCT frequencies kept per axis (default: "
                       "the method's)")


def _positive(value: float | None, _) -> str | None:
    return None if value is None or value > 0 else f"must be > 0, got {value}"


# The default step became grid-dependent after outputs existed: hashed, so those are recomputed.
EP_LR = Option("ep_lr", float, None, check=_positive,
               help="STEP / F-EP / EP: SGD learning rate (default: the STEP code's 0.05 x "
                    "max(1, mask parameters / 1024), 0.6125 for I3D at 224 px)")
# Added after outputs existed: at their defaults (which compute what their absence did) they
# stay out of the config hash, so earlier ep / step / fep outputs keep their hashes.
EP_REWARD = Option("ep_reward", str, "logit", choices=("logit", "prob"), hash_default=False,
                   help="STEP / F-EP / EP: what the preserved clip must keep: the target's "
                        "logit (torchray, the default) or its log-probability (the STEP code)")
EP_AREA_GAIN = Option("ep_area_gain", float, None, check=_positive, hash_default=False,
                      help="STEP / F-EP / EP: how many times the area term's weight grows over "
                           "the whole run (default: the STEP code's growth, x2 per 800 "
                           "iterations: x1.09 over 100; torchray's is x16 over its 800)")
STEP_CORE = Option("step_core", float, 0.0, check=at_least(0),  # DEFAULT_STEP_CORE
                   hash_default=False,
                   help="STEP: weight of the STEP code's core term (pooled mask pushed to 1 in "
                        "the top ellipsoid cells, 0 elsewhere; 300 in the STEP code), on after "
                        "the first tenth of the iterations; 0: off")


# --- Pure functions -------------------------------------------------------------------------


def mask_grid_shape(frame_shape: Sequence[int], step: int = DEFAULT_STEP
                    ) -> tuple[int, int, int]:
    """(T, H, W) → the parameter grid (T, ceil(H / step), ceil(W / step))."""
    t, h, w = (int(v) for v in frame_shape)
    if step < 1:
        raise ValueError(f"mask step must be >= 1 px, got {step}")
    return t, math.ceil(h / step), math.ceil(w / step)


def default_lr(grid: Sequence[int], base: float = LEARNING_RATE) -> float:
    """The SGD step for masks of ``grid`` = (t, h, w) parameters: ``base`` × max(1, P / 1024),
    P = t·h·w (module docstring, "Optimiser"). 0.05 at 16 × 8 × 8, 0.6125 at 16 × 28 × 28."""
    return base * max(1.0, math.prod(int(v) for v in grid) / REFERENCE_PARAMS)


def area_growth(gain: float, iterations: int) -> float:
    """The per-iteration factor that grows the area term's weight by ``gain`` over
    ``iterations`` steps: gain^(1 / iterations) (λ_t = λ_0 · factor^t, so λ at the last step
    is λ_0 · gain^((iterations − 1) / iterations))."""
    if not gain > 0:
        raise ValueError(f"ep_area_gain must be > 0, got {gain}")
    if iterations < 1:
        raise ValueError(f"ep_iterations must be >= 1, got {iterations}")
    return float(gain) ** (1.0 / iterations)


def upsample_mask(params: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Low-resolution masks (A, t, h, w) → (A, T, H, W) by trilinear interpolation.

    ``align_corners=False``; with t = T the time axis is copied and each frame is bilinearly
    interpolated. Differentiable; values stay in [min, max] of ``params``.
    """
    if params.ndim != 4:
        raise ValueError(f"expected (A, t, h, w) mask parameters, got {tuple(params.shape)}")
    return F.interpolate(params[:, None].float(), size=tuple(int(v) for v in size),
                         mode="trilinear", align_corners=False)[:, 0]


def area_reference(num: int, areas: Sequence[float], device: torch.device | str = "cpu"
                   ) -> torch.Tensor:
    """Fong et al.'s r_a for each area: (A, num) ascending, with round(a · num) trailing ones."""
    ref = torch.zeros(len(areas), num, device=device)
    for i, a in enumerate(areas):
        if not 0.0 < a < 1.0:
            raise ValueError(f"areas must be in (0, 1), got {a}")
        ones = int(round(a * num))
        if ones:
            ref[i, num - ones:] = 1.0
    return ref


def area_penalty(masks: torch.Tensor, reference: torch.Tensor,
                 perm: torch.Tensor | None = None) -> torch.Tensor:
    """‖sort(vec m_a) − r_a‖² / N for each mask: the area regulariser.

    Args:
        masks: (A, ...) masks, N voxels each.
        reference: (A, N) from :func:`area_reference`.
        perm: optional permutation of the N voxels applied before sorting (breaks ties at
            random instead of by position; the value is the same).

    Returns:
        (A,) penalties (0 exactly when a mask is binary with round(a·N) ones).
    """
    flat = masks.reshape(masks.shape[0], -1)
    if flat.shape != reference.shape:
        raise ValueError(f"masks have {tuple(flat.shape)} voxels, reference "
                         f"{tuple(reference.shape)}")
    if perm is not None:
        flat = flat[:, perm]
    return ((flat.sort(dim=1).values - reference) ** 2).mean(dim=1)


def temporal_smoothness(masks: torch.Tensor, orders: int = 3) -> torch.Tensor:
    """STEP's difference penalty: mean over k = 1..orders of mean((Δ_t^k m)²).

    Args:
        masks: (A, T, H, W); Δ_t^k is the k-th forward difference along T (``torch.diff``).
        orders: highest order (orders ≥ T are skipped: they have no terms).

    Returns:
        (A,); 0 for masks constant in time (and for T = 1).
    """
    if masks.ndim != 4:
        raise ValueError(f"expected (A, T, H, W) masks, got {tuple(masks.shape)}")
    terms = [torch.diff(masks, n=k, dim=1).pow(2).flatten(1).mean(dim=1)
             for k in range(1, orders + 1) if k < masks.shape[1]]
    if not terms:
        return masks.new_zeros(masks.shape[0])
    return torch.stack(terms).mean(dim=0)


def core_kernel_shape(frame_shape: Sequence[int]) -> tuple[int, int, int]:
    """(T, H, W) → the core term's ellipsoid (k_t, k_y, k_x): the STEP code's 8 key frames of
    16 and 11 × 11 px at 112 px, scaled to the clip: k_t = round(8 · T / 16), k_y = round(11 ·
    H / 112), k_x = round(11 · W / 112), each at least 1 (16 × 64 × 64 → (8, 6, 6))."""
    t, h, w = (int(v) for v in frame_shape)
    return (max(1, round(CORE_KEY_FRAMES * t / REFERENCE_FRAMES)),
            max(1, round(CORE_SIZE * h / 112.0)), max(1, round(CORE_SIZE * w / 112.0)))


def ellipsoid_kernel(shape: Sequence[int]) -> torch.Tensor:
    """Binary ellipsoid (k_t, k_y, k_x) inscribed in its box, as the STEP code's: the voxels
    whose coordinates, spaced evenly over [−1, 1] per axis (ends included), have norm ≤ 1. An
    axis of length 1 or 2 sits at 0, every voxel on it (the STEP code never has one; its ends
    ±1 would leave two such axes an empty kernel, e.g. at 24 px, where k_y = k_x = 2)."""
    axes = [torch.linspace(-1.0, 1.0, int(n)) if int(n) > 2 else torch.zeros(max(0, int(n)))
            for n in shape]
    if len(axes) != 3 or any(int(n) < 1 for n in shape):
        raise ValueError(f"expected three kernel sizes >= 1, got {tuple(shape)}")
    grids = torch.meshgrid(*axes, indexing="ij")
    return (sum(g ** 2 for g in grids) <= 1.0 + 1e-6).float()


def core_top_cells(num_voxels: int, area: float, kernel_shape: Sequence[int]) -> int:
    """The STEP code's number of pooled cells pushed to 1: ceil(a · N / ones), ones =
    int(k_t · k_y · k_x · 0.5236) (the ellipsoid's volume, π/6 of its box), at least 1."""
    ones = max(1, int(math.prod(int(k) for k in kernel_shape) * ELLIPSOID_FILL))
    return max(1, math.ceil(area * num_voxels / ones))


def core_cell_count(frame_shape: Sequence[int], kernel_shape: Sequence[int]) -> int:
    """M, the number of cells :func:`core_pool` gives for a (T, H, W) clip."""
    (t, h, w), (kt, ky, kx) = ((int(v) for v in frame_shape), (int(k) for k in kernel_shape))
    return (t - kt + 1) * ((h - ky) // ky + 1) * ((w - kx) // kx + 1)


def core_pool(masks: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Mean of each mask (A, T, H, W) over the ellipsoid ``kernel`` (k_t, k_y, k_x) at stride
    (1, k_y, k_x), no padding (the STEP code's ``conv3d`` divided by the kernel's sum): (A, M),
    M = (T − k_t + 1) · (⌊(H − k_y) / k_y⌋ + 1) · (⌊(W − k_x) / k_x⌋ + 1) cells in [0, 1]."""
    if masks.ndim != 4 or kernel.ndim != 3:
        raise ValueError(f"expected (A, T, H, W) masks and a (k_t, k_y, k_x) kernel, got "
                         f"{tuple(masks.shape)} and {tuple(kernel.shape)}")
    weight = (kernel / kernel.sum()).to(masks.device, torch.float32)[None, None]
    pooled = F.conv3d(masks[:, None].float(), weight,
                      stride=(1, int(kernel.shape[1]), int(kernel.shape[2])))
    return pooled.flatten(1)


def core_penalty(masks: torch.Tensor, areas: Sequence[float], kernel: torch.Tensor,
                 perm: torch.Tensor | None = None) -> torch.Tensor:
    """STEP's core term of each mask: mean over the top k_a pooled cells of (c − 1)² plus mean
    over the other cells of c² (the STEP code's ``CoreLossCalulator``, its "Old" variant).

    c are the masks' means over the ellipsoid (:func:`core_pool`), sorted in descending order;
    k_a = :func:`core_top_cells` for the mask's area, at most the number of cells (the second
    mean is 0 when no cell is left).

    Args:
        masks: (A, T, H, W) in [0, 1], one per area.
        areas: the A areas.
        kernel: (k_t, k_y, k_x) from :func:`ellipsoid_kernel`.
        perm: optional permutation of the M cells applied before sorting (random tie-breaks,
            as the STEP code's shuffle; the value is the same).

    Returns:
        (A,); 0 exactly when k_a ellipsoids are fully preserved and every other cell is empty.
    """
    if len(areas) != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {len(areas)} areas")
    cells = core_pool(masks, kernel)
    if perm is not None:
        cells = cells[:, perm]
    cells = cells.sort(dim=1, descending=True).values
    n_vox = math.prod(masks.shape[1:])
    out = []
    for i, a in enumerate(areas):
        k = min(core_top_cells(n_vox, float(a), kernel.shape), cells.shape[1])
        loss = (cells[i, :k] - 1.0).pow(2).mean()
        if k < cells.shape[1]:
            loss = loss + cells[i, k:].pow(2).mean()
        out.append(loss)
    return torch.stack(out)


def core_active(iteration: int, iterations: int, start: float = CORE_START) -> bool:
    """Whether the core term acts at ``iteration`` (0-based) of ``iterations``: after the first
    ``start`` share of the run, i.e. from iteration floor(start · iterations) + 1 (the STEP
    code sets its weight after its step at iteration 100, so it acts from 101 of 1000; here
    from 11 of 100)."""
    return iteration > math.floor(start * iterations)


def dct(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DCT-II along ``dim`` (scipy's ``dct(type=2, norm="ortho")``), via torch.fft.

    X_k = s_k Σ_n x_n cos(π k (2n + 1) / 2N), s_0 = √(1/N), s_k = √(2/N): the real part of
    e^{−iπk/2N} FFT([x, flip(x)])_k / 2, scaled.
    """
    x = x.movedim(dim, -1).float()
    n = x.shape[-1]
    spec = torch.fft.rfft(torch.cat([x, x.flip(-1)], dim=-1), dim=-1)[..., :n]
    k = torch.arange(n, device=x.device, dtype=torch.float32)
    out = (spec * torch.polar(torch.ones_like(k), -math.pi * k / (2 * n))).real / 2
    scale = torch.full((n,), math.sqrt(2.0 / n), device=x.device)
    scale[0] = math.sqrt(1.0 / n)
    return (out * scale).movedim(-1, dim)


def idct(coeffs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`dct` (orthonormal DCT-III) along ``dim``, via torch.fft.irfft."""
    c = coeffs.movedim(dim, -1).float()
    n = c.shape[-1]
    k = torch.arange(n, device=c.device, dtype=torch.float32)
    scale = torch.full((n,), math.sqrt(2.0 / n), device=c.device)
    scale[0] = math.sqrt(1.0 / n)
    spec = 2 * (c / scale) * torch.polar(torch.ones_like(k), math.pi * k / (2 * n))
    spec = torch.cat([spec, spec.new_zeros(*spec.shape[:-1], 1)], dim=-1)  # Y_N = 0
    return torch.fft.irfft(spec, n=2 * n, dim=-1)[..., :n].movedim(-1, dim)


def dctn(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Separable orthonormal DCT-II over ``dims``."""
    for d in dims:
        x = dct(x, d)
    return x


def idctn(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`dctn`."""
    for d in dims:
        x = idct(x, d)
    return x


def lowpass_sizes(shape: Sequence[int], keep: float) -> tuple[int, ...]:
    """Coefficients kept per axis: ceil(keep · n), at least 1."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"fep_keep must be in (0, 1], got {keep}")
    return tuple(max(1, math.ceil(keep * int(n))) for n in shape)


def dct_lowpass(grad: torch.Tensor, keep: float) -> torch.Tensor:
    """F-EP's modulation of a gradient (..., T, h, w): 3-D DCT, keep the low box, inverse.

    The coefficients with k_t < ceil(keep·T), k_y < ceil(keep·h), k_x < ceil(keep·w) are kept,
    the others set to 0. ``keep = 1`` returns the gradient (to float rounding).

    Returns:
        float32 tensor of the shape of ``grad``.
    """
    if grad.ndim < 3:
        raise ValueError(f"expected a (..., T, h, w) gradient, got {tuple(grad.shape)}")
    dims = (-3, -2, -1)
    kt, ky, kx = lowpass_sizes(grad.shape[-3:], keep)
    coeffs = dctn(grad.float(), dims)
    box = torch.zeros_like(coeffs)
    box[..., :kt, :ky, :kx] = 1.0
    return idctn(coeffs * box, dims)


def modulate(grad: torch.Tensor, keep: float) -> torch.Tensor:
    """F-EP's step direction: :func:`dct_lowpass` of each (T, h, w) gradient of ``grad``
    (A, T, h, w), rescaled to that gradient's L2 norm (0 stays 0)."""
    low = dct_lowpass(grad, keep)
    before = grad.float().flatten(1).norm(dim=1)
    after = low.flatten(1).norm(dim=1)
    scale = torch.where(after > 0, before / after.clamp(min=torch.finfo(after.dtype).tiny),
                        torch.zeros_like(after))
    return low * scale.view(-1, *([1] * (grad.ndim - 1)))


def preserve(x: torch.Tensor, fill: torch.Tensor | float, masks: torch.Tensor) -> torch.Tensor:
    """m ⊙ x + (1 − m) ⊙ fill for each mask.

    Args:
        x: normalised clip (3, T, H, W).
        fill: (3, T, H, W) or a number (the perturbed clip, e.g. the blur).
        masks: (A, T, H, W) in [0, 1], 1 = preserved.

    Returns:
        (A, 3, T, H, W), differentiable w.r.t. ``masks``.
    """
    m = masks[:, None]
    return fill + m * (x - fill)


def reward_loss(logits: torch.Tensor, target: int, kind: str = "logit") -> torch.Tensor:
    """−reward of each preserved clip, (A,): −logit (``logit``) or −log p (``prob``)."""
    if kind == "prob":
        return -torch.log_softmax(logits.float(), dim=1)[:, target]
    if kind == "logit":
        return -logits.float()[:, target]
    raise ValueError(f"unknown reward {kind!r}; use logit or prob")


def regulariser(masks: torch.Tensor, reference: torch.Tensor, area_weight: float,
                smooth_weight: float = 0.0, perm: torch.Tensor | None = None,
                orders: int = 3) -> torch.Tensor:
    """λ · area penalty (+ μ · temporal smoothness) of each mask (A, T, H, W), (A,)."""
    loss = area_weight * area_penalty(masks, reference, perm)
    if smooth_weight:
        loss = loss + smooth_weight * temporal_smoothness(masks, orders)
    return loss


def unmet_areas(masks: torch.Tensor, areas: Sequence[float], iterations: int,
                tolerance: float = AREA_TOLERANCE) -> str | None:
    """A one-line warning when a mask's coverage (its mean over the clip) is more than
    ``tolerance`` from its area: the optimisation stopped before the area constraint held, so
    the map is not the extremal perturbation of those areas. None when every mask holds it.

    Args:
        masks: (A, T, H, W) final masks in [0, 1].
        areas: the A areas.
        iterations: how many steps were run (named in the message).
    """
    if masks.shape[0] != len(areas):
        raise ValueError(f"{masks.shape[0]} masks but {len(areas)} areas")
    covered = masks.float().reshape(masks.shape[0], -1).mean(dim=1).tolist()
    if all(abs(c - a) <= tolerance for c, a in zip(covered, areas, strict=True)):
        return None
    return (f"the masks cover {', '.join(f'{c:.2f}' for c in covered)} of the clip, not their "
            f"areas {', '.join(f'{a:g}' for a in areas)}, after {iterations} iterations: not "
            f"converged, so the map is not an extremal perturbation of those areas (raise "
            f"--ep-iterations; the area term moves each mask parameter less per step the finer "
            f"the mask grid: docs/realbench.md#step-ep-and-f-ep-on-i3d)")


def combine_masks(masks: torch.Tensor) -> torch.Tensor:
    """(A, T, H, W) masks of the areas → one (T, H, W) map: their mean, in [0, 1]."""
    return masks.float().mean(dim=0)


@dataclass(frozen=True)
class EPSettings:
    """One optimisation (module docstring). ``smooth`` = STEP's difference term, ``fep_keep``
    = F-EP's low-pass fraction (None: no modulation), ``core_weight`` = the weight of STEP's
    core term (0: off), on after the first ``core_start`` share of the iterations
    (:func:`core_active`)."""

    areas: tuple[float, ...] = DEFAULT_AREAS
    iterations: int = DEFAULT_ITERATIONS
    step: int = DEFAULT_STEP
    lr: float | None = None  # None: default_lr of the clip's mask grid
    momentum: float = MOMENTUM
    area_weight: float = AREA_WEIGHT
    area_growth: float = AREA_GROWTH
    smooth: bool = False
    smooth_orders: int = 3
    fep_keep: float | None = None
    core_weight: float = 0.0
    core_start: float = CORE_START
    seed: int = 0
    init: float = 1.0
    reward: str = "logit"

    def __post_init__(self) -> None:
        if not self.areas:
            raise ValueError("ep_areas must name at least one area")
        for a in self.areas:
            if not 0.0 < float(a) < 1.0:
                raise ValueError(f"ep_areas must be in (0, 1), got {a}")
        if self.iterations < 1:
            raise ValueError(f"ep_iterations must be >= 1, got {self.iterations}")
        if self.fep_keep is not None:
            lowpass_sizes((1,), self.fep_keep)  # validates the range
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"ep_lr must be > 0, got {self.lr}")
        if not self.core_weight >= 0:
            raise ValueError(f"step_core must be >= 0, got {self.core_weight}")
        if not 0.0 <= self.core_start < 1.0:
            raise ValueError(f"core_start must be in [0, 1), got {self.core_start}")
        if self.reward not in ("logit", "prob"):
            raise ValueError(f"unknown reward {self.reward!r}; use logit or prob")


@dataclass(frozen=True)
class EPResult:
    """Masks (A, T, H, W) float32 on the device, one per area, and the preserved clips' target
    scores (A,) on the CPU (the engine's score kind) at the last iteration, before its step."""

    masks: torch.Tensor
    scores: torch.Tensor


def optimise_masks(engine: PerturbationEngine, fill: torch.Tensor | float,
                   settings: EPSettings) -> EPResult:
    """Optimise one preservation mask per area, all areas as one batch (module docstring).

    Counts ``len(areas)`` forwards and backwards per iteration on ``engine.passes``.
    """
    x = engine.x.detach().float()
    if torch.is_tensor(fill):
        fill = fill.detach().float()
    size = engine.frame_shape
    areas = tuple(float(a) for a in settings.areas)
    n_areas, n_vox = len(areas), math.prod(size)
    device = engine.device
    params = torch.full((n_areas, *mask_grid_shape(size, settings.step)), settings.init,
                        device=device, requires_grad=True)
    reference = area_reference(n_vox, areas, device)
    lr = settings.lr if settings.lr is not None else default_lr(params.shape[1:])
    optimiser = torch.optim.SGD([params], lr=lr, momentum=settings.momentum,
                                dampening=settings.momentum)
    gen = torch.Generator(device=device)
    gen.manual_seed(settings.seed)
    chunk = max(1, engine.batch_size)
    scores = torch.zeros(n_areas)
    weight = settings.area_weight
    kernel = (ellipsoid_kernel(core_kernel_shape(size)).to(device)
              if settings.core_weight else None)
    cells = core_cell_count(size, kernel.shape) if kernel is not None else 0
    for it in range(settings.iterations):
        optimiser.zero_grad(set_to_none=False)
        perm = torch.randperm(n_vox, generator=gen, device=device)
        last = []
        with torch.enable_grad():
            for start in range(0, n_areas, chunk):  # the network's gradient, one batch
                sel = slice(start, min(start + chunk, n_areas))
                logits = engine.scorer.logits(preserve(x, fill, upsample_mask(params[sel], size)))
                if not logits.requires_grad:
                    raise ValueError("the network's output does not depend on its input: "
                                     "extremal perturbation has no gradient to follow")
                reward_loss(logits, engine.target, settings.reward).sum().backward()
                b = logits.shape[0]
                engine.passes.forward += b
                engine.count_backward(b)
                last.append(target_score(logits.detach(), engine.target, engine.score_kind))
            if settings.fep_keep is not None:
                with torch.no_grad():
                    params.grad.copy_(modulate(params.grad, settings.fep_keep))
            masks = upsample_mask(params, size)
            reg = regulariser(masks, reference, weight, weight if settings.smooth else 0.0,
                              perm, settings.smooth_orders)
            if kernel is not None and core_active(it, settings.iterations, settings.core_start):
                core_perm = torch.randperm(cells, generator=gen, device=device)
                reg = reg + settings.core_weight * core_penalty(masks, areas, kernel, core_perm)
            reg.sum().backward()
        optimiser.step()
        with torch.no_grad():
            params.clamp_(0.0, 1.0)
        weight *= settings.area_growth
        scores = torch.cat(last).cpu()
    with torch.no_grad():
        masks = upsample_mask(params.detach(), size)
    return EPResult(masks, scores)


# --- Methods --------------------------------------------------------------------------------


class _Extremal(Method):
    """Shared method body: options → :class:`EPSettings` → masks → one map."""

    default_fill = "blur"
    smooth: bool = False  # STEP's temporal difference term
    low_pass: bool = False  # F-EP's gradient modulation
    core: bool = False  # STEP's core term (weight --step-core)
    # No --score: the reward is --ep-reward whatever --score is (module docstring).
    reads = (EP_ITERATIONS, EP_AREAS, FILL, EP_LR, EP_REWARD, EP_AREA_GAIN)

    @classmethod
    def options_read(cls, fill: str | None) -> tuple[str, ...]:
        """The default blur's sigma is the method's own (:meth:`fill`), not --fill-sigma."""
        if fill is None:
            return tuple(o.name for o in cls.reads)
        return super().options_read(fill)

    def settings(self) -> EPSettings:
        opts = self.options
        keep = opts.fep_keep
        iterations = int(opts.ep_iterations or DEFAULT_ITERATIONS)
        gain = opts.ep_area_gain
        return EPSettings(
            areas=tuple(float(a) for a in opts.ep_areas or DEFAULT_AREAS),
            iterations=iterations,
            lr=float(opts.ep_lr) if opts.ep_lr is not None else None,
            area_growth=(area_growth(float(gain), iterations) if gain is not None
                         else AREA_GROWTH),
            reward=opts.ep_reward,
            smooth=self.smooth,
            core_weight=float(opts.step_core) if self.core else 0.0,
            fep_keep=(float(keep) if keep is not None else DEFAULT_FEP_KEEP)
            if self.low_pass else None)

    def fill(self, engine: PerturbationEngine) -> torch.Tensor | float:
        """``--fill`` when given; else a blur of σ = 20 px × H / 112."""
        if self.options.fill is not None:
            return super().fill(engine)
        return engine.fill("blur", sigma=REFERENCE_MAX_BLUR * engine.frame_shape[1] / 112.0)

    def explain(self, engine: PerturbationEngine, tubes: Tubes | None) -> Explanation:
        settings = self.settings()
        result = optimise_masks(engine, self.fill(engine), settings)
        unmet = unmet_areas(result.masks, settings.areas, settings.iterations)
        return Explanation(combine_masks(result.masks).cpu(), (unmet,) if unmet else ())


@register_method("ep")
class ExtremalPerturbation(_Extremal):
    """Plain extremal perturbation of the whole clip (no smoothness term, no modulation)."""

    name = "ep"


@register_method("step")
class STEP(_Extremal):
    """STEP: extremal perturbation plus the temporal difference penalty (and the core term
    when ``--step-core`` > 0)."""

    name = "step"
    smooth = True
    core = True
    reads = (*_Extremal.reads, STEP_CORE)


@register_method("fep")
class FEP(_Extremal):
    """F-EP: extremal perturbation with DCT low-pass gradients."""

    name = "fep"
    low_pass = True
    reads = (*_Extremal.reads, FEP_KEEP)
