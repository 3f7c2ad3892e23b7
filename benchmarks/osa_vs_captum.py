"""2. ``osa`` ÷ ``captum.attr.Occlusion``: the same windows, strides, network and clip.

    python -m benchmarks.osa_vs_captum [--model r3d_18 --frames 8 --size 56 --repeats 1]

Both score the softmax probability of the clean clip's top class with the mean-colour fill (0
in normalised space): ``osa`` through the perturbation engine (masks built on the device, a batch
at a time), captum's ``Occlusion`` with ``sliding_window_shapes=(3, *window)``,
``strides=(3, *strides)`` (osa's defaults, :func:`~transforms.methods.osa.osa_geometry`) and
``perturbations_per_eval`` = the batch size. The maps must be equal (checked before anything is
timed). Targets: time and peak memory ratios ≤ 1.0.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from captum.attr import Occlusion

from benchmarks import common
from transforms.methods.base import get_method
from transforms.methods.osa import osa_geometry, window_boxes
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer


def predicted_class(scorer: Scorer, x: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(scorer.logits(x[None]).argmax())


def osa_map(scorer: Scorer, x: torch.Tensor, target: int, batch: int) -> np.ndarray:
    """vidxai's ``osa``, clean forward included: float32 (T, H, W)."""
    engine = PerturbationEngine(scorer, x, target, "prob", batch)
    return get_method("osa").explain(engine, None).saliency.numpy()


def captum_map(scorer: Scorer, x: torch.Tensor, target: int, batch: int) -> np.ndarray:
    """captum's Occlusion with osa's geometry: float32 (T, H, W) (its 3 channels are equal)."""
    window, strides = osa_geometry(tuple(x.shape[1:]))
    occ = Occlusion(lambda inp: torch.softmax(scorer.logits(inp), dim=1))
    with torch.no_grad():
        attr = occ.attribute(x[None], sliding_window_shapes=(3, *window),
                             strides=(3, *strides), baselines=0, target=target,
                             perturbations_per_eval=batch)
    return attr[0, 0].float().cpu().numpy()


VARIANTS = {"osa": osa_map, "captum": captum_map}


def child(settings: dict, variant: str) -> dict:
    """Peak memory of one variant in a fresh process (see :mod:`benchmarks.common`)."""
    args, scorer, x = common.child_setup(settings)
    target = predicted_class(scorer, x)
    return common.peak_growth_mb(lambda: VARIANTS[variant](scorer, x, target, args.batch_size),
                                 scorer.device)


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    scorer = common.load_scorer(args)
    x = scorer.to_input(common.synthetic_clip(args.frames, args.size))
    shape = tuple(x.shape[1:])
    window, strides = osa_geometry(shape)
    n = window_boxes(shape, window, strides).shape[0]
    target = predicted_class(scorer, x)
    print(common.header("2. osa ÷ captum.attr.Occlusion", args, windows=n, window=window,
                        strides=strides, perturbations_per_eval=args.batch_size), flush=True)
    ours = osa_map(scorer, x, target, args.batch_size)  # also the warm-up of both
    ref = captum_map(scorer, x, target, args.batch_size)
    diff = common.check_equal(ours, ref, ("osa", "captum"))
    clock, inside = common.NetworkClock(scorer), {k: [] for k in VARIANTS}
    t = common.interleaved({k: clock.measure(lambda f=f: f(scorer, x, target, args.batch_size),
                                             inside[k]) for k, f in VARIANTS.items()},
                           args.repeats, scorer.device, warmup=False)
    net = {k: statistics.median(v) for k, v in inside.items()}
    mem = {k: common.in_child("benchmarks.osa_vs_captum:child",
                              settings=common.settings_of(args), variant=k) for k in VARIANTS}
    print(common.same_forwards_lines(t, net, "osa", "captum", n + 1))
    print(f"peak mem  osa +{mem['osa']['peak_mb']:.0f} MB, captum "
          f"+{mem['captum']['peak_mb']:.0f} MB (fresh process each, over "
          f"{mem['osa']['before_mb']:.0f} MB after loading): osa / captum = "
          f"{common.fmt_ratio(mem['osa']['peak_mb'], mem['captum']['peak_mb'])} "
          "(target <= 1.0)", flush=True)
    return {"time": t, "network": net, "memory": mem, "max_diff": diff}


if __name__ == "__main__":
    main()
