"""Probes of why a tube method answers as it does on a clip (issue 21's experiments).

    python -m pipeline.apps.probe linearity --manifest rb0/sub12.jsonl --rows 0,3,6
    python -m pipeline.apps.probe windows --manifest halves/realbench.jsonl --rows 1,2,7

``linearity``: is AOSA-approx's estimate of each mask's score change right? For each clip, the
N integrated tube masks of ``aosa`` (the job's default geometry: ``--stride``, ``--box-size``
and ``--topk`` unset), the approximation's estimates Δ̂_i (fill ``local_mean``, no adjustment:
``aosa_approx``'s defaults; the gradient where ``--approx-steps`` says, 0 for the paper's
first-order term at the clip) and the exact changes Δ_i(a) of occluding mask i only partly,
V + a (μ − V) inside the mask, for a in ``--alphas`` (a = 1: AOSA's occlusion). A first-order
estimate at the clip predicts Δ_i(a) = a Δ̂_i; the probe prints per a the Spearman and Pearson
correlations of a Δ̂ and Δ(a), the share of masks whose signs agree, the least-squares
scale of Δ(a) on a Δ̂ (1 where the estimate is right, 0 where it says nothing), and the
share of the exact top decile (the masks whose occlusion lowers f most) that the estimate
also puts in its top decile (what the map's strongest regions rest on). Cost:
N × len(alphas) forwards + max(1, K) gradients per clip.

``windows``: AOSA-T's mask scores per temporal window (its default windows: two half clips):
per window the median, mean and 90th percentile of the drops f(V) − f_i, the share of masks
that drop f by more than half, and f with the whole window blanked with the same fill. Cost:
2N + 2 forwards per clip.

Both print one JSON line per clip; the network is I3D with its Kinetics weights unless
``--model`` says otherwise, the class is the manifest row's ``label``, the score the softmax
probability (``--score logit`` for the logit), the precision ``--precision``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from transforms.methods.aosa import occlusion_scores
from transforms.methods.aosa_approx import APPROX_AT
from transforms.methods.base import MethodOptions, get_method
from transforms.perturbation import SCORES, PerturbationEngine

ALPHAS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Agreement:
    """How exact changes Δ (n,) follow first-order predictions Δ̂ (n,)."""

    spearman: float
    pearson: float
    same_sign: float
    scale: float  # least-squares s in Δ ≈ s · Δ̂
    top_overlap: float  # share of Δ's largest-drop decile also in Δ̂'s


def top_overlap(predicted: np.ndarray, exact: np.ndarray, share: float = 0.1) -> float:
    """Share of the ⌈share · n⌉ largest of ``exact`` (n,) that are also among the as many
    largest of ``predicted`` (n,); ties broken by position."""
    k = max(1, int(np.ceil(share * len(exact))))
    top = lambda v: set(np.argsort(-np.asarray(v, np.float64), kind="stable")[:k].tolist())
    return len(top(predicted) & top(exact)) / k


def agreement(predicted: np.ndarray, exact: np.ndarray) -> Agreement:
    """Compare predicted and exact score changes of the same masks, (n,) each."""
    predicted, exact = np.asarray(predicted, np.float64), np.asarray(exact, np.float64)
    denom = float(np.sum(predicted * predicted))
    varied = np.ptp(predicted) > 0 and np.ptp(exact) > 0  # else no correlation is defined
    return Agreement(float(spearmanr(predicted, exact)[0]) if varied else float("nan"),
                     float(pearsonr(predicted, exact)[0]) if varied else float("nan"),
                     float(np.mean(np.sign(predicted) == np.sign(exact))),
                     float(np.sum(predicted * exact) / denom) if denom > 0 else float("nan"),
                     top_overlap(-predicted, -exact))  # drops: the most negative changes


def linearity(engine: PerturbationEngine, boxes: torch.Tensor, partners: torch.Tensor,
              alphas: Sequence[float] = ALPHAS, method: str = "aosa_approx",
              steps: int | None = None, at: str | None = None) -> dict[float, Agreement]:
    """Per occlusion strength a: the agreement of a · Δ̂ (``method``'s estimates, its default
    fill μ) with the exact changes of V + a (μ − V) inside each mask.

    Args:
        engine: the clip's perturbation engine (its score kind is used throughout).
        boxes: int (N, T, 4) tube boxes; partners: int64 (N, K).
        steps: ``--approx-steps`` of the estimates (None: the method's default).
        at: ``--approx-at`` of the estimates (None: the method's default).
    """
    given = {"approx_steps": steps, "approx_at": at}
    approx = get_method(method, MethodOptions(**{k: v for k, v in given.items()
                                                 if v is not None}))
    fill = approx.fill(engine)
    base = float(engine.base_score)
    estimate = approx.mask_scores(engine, boxes, partners).double().cpu().numpy() - base
    out = {}
    for a in alphas:
        partial = fill if a == 1 else engine.x + a * (fill - engine.x)
        exact = occlusion_scores(engine, boxes, partners, partial).double().cpu().numpy() - base
        out[float(a)] = agreement(a * estimate, exact)
    return out


def window_drops(engine: PerturbationEngine, boxes: np.ndarray, partners: np.ndarray,
                 windows: Sequence[tuple[int, int]], fill: torch.Tensor | float
                 ) -> list[dict[str, float]]:
    """AOSA-T's masks ``(N · W, T, 4)`` (window-major, as ``aosa_t``'s ``mask_set``) scored
    exactly; per window the statistics of the drops and f with the whole window blanked."""
    base = float(engine.base_score)
    scores = occlusion_scores(engine, torch.from_numpy(boxes).to(engine.device),
                              torch.from_numpy(partners).to(engine.device), fill)
    drops = base - scores.double().cpu().numpy()
    n = len(drops) // len(windows)
    out = []
    for w, (a, b) in enumerate(windows):
        d = drops[w * n:(w + 1) * n]
        blank = engine.x.clone()
        blank[:, a:b] = fill if isinstance(fill, float) else fill[:, a:b]
        f_blank = float(engine.score(blank[None])[0])
        out.append({"frames": [a, b], "median_drop": float(np.median(d)),
                    "mean_drop": float(d.mean()), "q90_drop": float(np.quantile(d, 0.9)),
                    "share_drop_over_half": float(np.mean(d > base / 2)),
                    "f_window_blanked": f_blank})
    return out


def _clip_engine(scorer, ref, score: str, batch_size: int):
    """The clip of a manifest row (a ClipRef) as the job decodes it, its tubes (the job's
    default geometry) and its engine aimed at the row's label."""
    from transforms.decode import decode_clip
    from transforms.tubes import BOX_SIZE, STRIDE, TOPK, tubes_from_frames

    spec = scorer.spec
    clip = decode_clip(ref.video, ref.start_frame, spec.num_frames, spec.input_size,
                       spec.resize_ratio)
    x = scorer.to_input(clip.frames)
    sizes = {"size": int(x.shape[-1]), "stride": None}  # the job's defaults for this size
    stride, box = STRIDE.resolve(None, sizes), BOX_SIZE.resolve(None, sizes)
    tubes = tubes_from_frames(clip.frames, stride, (box, box), TOPK.default)
    return tubes, PerturbationEngine(scorer, x, ref.label, score, batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=("linearity", "windows"))
    ap.add_argument("--manifest", type=Path, required=True, help="JSONL with video, label")
    ap.add_argument("--rows", required=True, help="comma list of 0-based manifest rows")
    ap.add_argument("--model", default="i3d_kinetics400")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (as the job)")
    ap.add_argument("--score", choices=SCORES, default="prob")
    ap.add_argument("--fill", default="mean", help="windows: the occluder (mean | blur | "
                                                   "local_mean)")
    ap.add_argument("--alphas", default=",".join(map(str, ALPHAS)),
                    help="linearity: occlusion strengths a in (0, 1]")
    ap.add_argument("--approx-steps", type=int, default=None,
                    help="linearity: where the estimates' gradient is taken (as the job's "
                         "--approx-steps; default: the job's default)")
    ap.add_argument("--approx-at", choices=APPROX_AT.choices, default=None,
                    help="linearity: where the estimates' expansion is taken (as the job's "
                         "--approx-at; default: the job's default)")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    from transforms.io import read_manifest
    from transforms.model_handler import ModelConfig, VideoModelHandler
    from transforms.records import ClipRef

    handler = VideoModelHandler(ModelConfig(args.model), "cpu", args.precision)
    spec = handler.spec()
    refs = list(read_manifest(str(args.manifest), spec.num_frames, 1, handler.class_names()))
    try:
        rows = [int(i) for i in args.rows.split(",")]
        missing = [i for i in rows if not 0 <= i < len(refs)]
        if missing:
            raise ValueError(f"--rows {missing}: {args.manifest} has {len(refs)} rows")
        picked = [refs[i] for i in rows]
        bad = [r for r in picked if not isinstance(r, ClipRef) or r.label is None]
        if bad:
            raise ValueError(f"rows without a readable video and label: {bad}")
        alphas = [float(a) for a in args.alphas.split(",")]
        if not all(0 < a <= 1 for a in alphas):
            raise ValueError(f"--alphas must be in (0, 1], got {args.alphas}")
    except ValueError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    scorer = handler.load_model()
    for ref in picked:
        tubes, engine = _clip_engine(scorer, ref, args.score, args.batch_size)
        out = {"video": ref.video, "label": ref.label, "f": float(engine.base_score)}
        if args.probe == "linearity":
            res = linearity(engine, torch.from_numpy(tubes.boxes),
                            torch.from_numpy(tubes.partners), alphas, steps=args.approx_steps,
                            at=args.approx_at)
            out["alphas"] = {str(a): vars(r) for a, r in res.items()}
        else:
            method = get_method("aosa_t", MethodOptions(fill=args.fill))
            t = engine.frame_shape[0]
            boxes, partners = method.mask_set(tubes, t)
            out["windows"] = window_drops(engine, boxes, partners, method.windows(t),
                                          method.fill(engine))
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
