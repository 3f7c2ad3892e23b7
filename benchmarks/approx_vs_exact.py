"""4. ``aosa_approx`` ÷ ``aosa`` time at N = 196 (and the single-mask pair).

    python -m benchmarks.approx_vs_exact [--model r3d_18 --frames 8 --size 56 --repeats 1]

Stride size / 14 (N = 196), box 2 × stride, K = 3, on one clip; every method through the
perturbation engine as the pipeline runs it (clean forward included). The approximations run
without the paper's derivative adjustment (the default) and with it (``--approx-adjust``).
Target: ``aosa_approx`` / ``aosa`` ≤ 1/20. When it is missed the profile of one
``aosa_approx`` map is printed: the time of its network passes alone (the floor no estimate
can go under: at batch 1 a forward costs more per clip than in exact AOSA's batches) and
cProfile's heaviest calls. The paper's expansion in the clip's voxels (``--approx-at input``)
runs beside the default one in the network's layer.
"""

from __future__ import annotations

import cProfile
import io
import pstats

import torch

from benchmarks import common
from benchmarks.dense_masks import setup
from transforms.methods.aosa_approx import layer_expansion
from transforms.methods.base import MethodOptions, get_method
from transforms.perturbation import PerturbationEngine
from transforms.scoring import Scorer
from transforms.tubes import Tubes

TARGET = 1 / 20
RUNS = {  # label → (method, options)
    "aosa": ("aosa", {}),
    "aosa_approx": ("aosa_approx", {}),
    "aosa_approx --approx-adjust": ("aosa_approx", {"approx_adjust": True}),
    "aosa_approx --approx-at input": ("aosa_approx", {"approx_at": "input"}),
    "aosa_sgl": ("aosa_sgl", {}),
    "aosa_sgl_approx": ("aosa_sgl_approx", {}),
}


def explain(scorer: Scorer, x: torch.Tensor, tubes: Tubes, target: int, batch: int,
            method: str, options: dict) -> PerturbationEngine:
    """One map, clean forward included; the engine (for its pass counts)."""
    engine = PerturbationEngine(scorer, x, target, "prob", batch)
    get_method(method, MethodOptions(**options)).explain(engine, tubes)
    return engine


def passes_floor(scorer: Scorer, x: torch.Tensor, target: int, extremes: int,
                 repeats: int) -> float:
    """Seconds of aosa_approx's network passes alone (its defaults: the expansion in the
    network's layer, one path point): the clean forward, the clip's and the fill's activations
    at batch 2, the gradient at the path's point and, when the adjustment ran, the gradients of
    batch ``extremes`` (the Tukey tails' expansion points).
    """
    layer = scorer.spec.gradcam_layer

    def passes() -> None:
        engine = PerturbationEngine(scorer, x, target, "prob", 2)
        expansion = layer_expansion(engine, layer, 0.0)
        expansion.grad_at(((expansion.start + expansion.end) / 2)[None])
        if extremes:
            expansion.grad_of_clips(x[None].expand(extremes, -1, -1, -1, -1))

    return common.interleaved({"passes": passes}, repeats, scorer.device)["passes"]


def profile(fn) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if "ncalls" in ln)
    return "\n".join(lines[start:])


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    scorer, x, tubes, target = setup(args)
    print(common.header("4. aosa_approx ÷ aosa at N = 196", args, N=tubes.num_masks,
                        K=tubes.partners.shape[1]), flush=True)
    passes = {k: explain(scorer, x, tubes, target, args.batch_size, *v).passes
              for k, v in RUNS.items()}  # also the warm-up
    t = common.interleaved({k: (lambda v=v: explain(scorer, x, tubes, target,
                                                    args.batch_size, *v))
                            for k, v in RUNS.items()}, args.repeats, scorer.device,
                           warmup=False)
    for k in RUNS:
        exact = "aosa_sgl" if "sgl" in k else "aosa"
        rel = "" if k == exact else (f"  {k} / {exact} = 1/{t[exact] / t[k]:.1f}")
        print(f"{k:<32} {t[k]:8.3f} s  {passes[k].forward:>4} forwards "
              f"{passes[k].backward:>2} backwards{rel}")
    ratio = t["aosa_approx"] / t["aosa"]
    met = ratio <= TARGET
    print(f"aosa_approx / aosa = {ratio:.4f} = 1/{1 / ratio:.1f} (target <= 1/20: "
          f"{'met' if met else 'MISSED'})", flush=True)
    extremes = passes["aosa_approx"].backward - 1
    floor = passes_floor(scorer, x, target, extremes, args.repeats)
    print(f"profile: aosa_approx's network passes alone (clean forward, the layer's "
          f"activations of clip and fill, gradient at batch 1"
          f"{f', gradient at batch {extremes}' if extremes else ''}) take {floor:.3f} s = "
          f"1/{t['aosa'] / floor:.1f} of aosa; the rest of aosa_approx (fill, direction map, "
          f"box sums, map) {max(t['aosa_approx'] - floor, 0.0):.3f} s")
    if not met:
        print("cProfile of one aosa_approx map (tottime):")
        print(profile(lambda: explain(scorer, x, tubes, target, args.batch_size,
                                      "aosa_approx", {})))
    return {"time": t, "ratio": ratio, "floor": floor}


if __name__ == "__main__":
    main()
