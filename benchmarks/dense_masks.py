"""3. AOSA ÷ a dense-mask implementation in the style of the authors' code.

    python -m benchmarks.dense_masks [--model r3d_18 --frames 8 --size 56 --repeats 1]

The reference (written here, not used by the pipeline) builds all N integrated masks as one
float32 array (N, 3, T, H, W) on the host, with Python loops over masks, members and frames as
the authors' code does, then scores ``x · (1 − m) + fill · m`` a batch at a time on the device
and aggregates like ``--aggregation mean``. vidxai's ``aosa`` rasterises boolean masks on the
device ``--batch-size`` at a time. The maps must be equal (checked first). Memory is measured
three ways in fresh processes: AOSA, the reference, and the same number of plain forwards (the
network's own share), so that the memory each method adds over the network is shown too.
Targets: less time outside the network (both run the same forwards, so the totals tie within
their run-to-run spread), and ≥ 10× less peak memory over the network's.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import numpy as np
import torch

from benchmarks import common
from transforms.flow import farneback_flow
from transforms.methods.base import MethodOptions, get_method
from transforms.perturbation import PerturbationEngine, target_score
from transforms.scoring import Scorer
from transforms.tubes import Tubes, build_tubes


def clip_tubes(frames: np.ndarray, size: int) -> Tubes:
    """The default geometry: stride size / 14 (N = 196), box 2 × stride, K = 3."""
    stride = max(1, size // 14)
    return build_tubes(farneback_flow(frames), stride, (2 * stride, 2 * stride), 3)


def predicted_class(scorer: Scorer, x: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(scorer.logits(x[None]).argmax())


def aosa_map(scorer: Scorer, x: torch.Tensor, tubes: Tubes, target: int, batch: int
             ) -> np.ndarray:
    """vidxai's ``aosa`` (mean fill, ``mean`` aggregation), clean forward included."""
    engine = PerturbationEngine(scorer, x, target, "prob", batch)
    return get_method("aosa", MethodOptions()).explain(engine, tubes).saliency.numpy()


def dense_host_masks(tubes: Tubes, frames: int) -> np.ndarray:
    """float32 (N, 3, T, H, W): 1 where occluded, every mask at once, built by Python loops."""
    h, w = tubes.frame_size
    masks = np.zeros((tubes.num_masks, 3, frames, h, w), dtype=np.float32)
    for i in range(tubes.num_masks):
        for m in (i, *tubes.partners[i].tolist()):
            for t in range(frames):
                x0, y0, x1, y1 = tubes.boxes[m, t].tolist()
                masks[i, :, t, y0:y1, x0:x1] = 1.0
    return masks


def dense_map(scorer: Scorer, x: torch.Tensor, tubes: Tubes, target: int, batch: int
              ) -> np.ndarray:
    """The dense-mask reference: host masks, then batched ``x · (1 − m) + 0 · m``."""
    with torch.inference_mode():
        base = float(target_score(scorer.logits(x[None]), target)[0])
        masks = dense_host_masks(tubes, x.shape[1])
        host = x.cpu()
        scores = []
        for s in range(0, len(masks), batch):
            m = torch.from_numpy(masks[s:s + batch])
            xb = (host[None] * (1.0 - m) + 0.0 * m).to(scorer.device)
            scores.append(target_score(scorer.logits(xb), target).cpu())
        drop = base - torch.cat(scores).double()  # (N,)
        cover = torch.from_numpy(masks[:, 0]).double()  # (N, T, H, W)
        num = torch.einsum("n,nthw->thw", drop, cover)
        den = cover.sum(0)
    return torch.where(den > 0, num / den.clamp(min=1.0), 0.0).float().numpy()


def plain_forwards(scorer: Scorer, x: torch.Tensor, tubes: Tubes, target: int, batch: int
                   ) -> None:
    """The same forwards (1 clean + N at ``batch``) of the unoccluded clip: the network alone."""
    with torch.inference_mode():
        scorer.logits(x[None])
        for s in range(0, tubes.num_masks, batch):
            b = min(batch, tubes.num_masks - s)
            scorer.logits(x[None].expand(b, -1, -1, -1, -1))


VARIANTS = {"aosa": aosa_map, "dense": dense_map, "forwards": plain_forwards}


def child(settings: dict, variant: str) -> dict:
    args, scorer, x = common.child_setup(settings)
    frames = common.synthetic_clip(args.frames, args.size)
    tubes, target = clip_tubes(frames, args.size), predicted_class(scorer, x)
    return common.peak_growth_mb(
        lambda: VARIANTS[variant](scorer, x, tubes, target, args.batch_size), scorer.device)


def allocator_child(settings: dict, retain: bool) -> dict:
    """The plain forwards (best of 2) with glibc's default thresholds or with freed memory
    retained (:mod:`models.allocator`, which every Scorer on the CPU applies): seconds, minor
    page faults and kernel seconds."""
    args, scorer, x = common.child_setup(settings, retain)
    tubes = clip_tubes(common.synthetic_clip(args.frames, args.size), args.size)
    runs = []
    for _ in range(2):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        plain_forwards(scorer, x, tubes, 0, args.batch_size)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        runs.append({"seconds": time.perf_counter() - t0, "faults": r1.ru_minflt - r0.ru_minflt,
                     "kernel_s": r1.ru_stime - r0.ru_stime})
    return min(runs, key=lambda r: r["seconds"])


def setup(args: argparse.Namespace) -> tuple[Scorer, torch.Tensor, Tubes, int]:
    """The scorer, the clip (3, T, H, W) on its device, its tubes and its top class."""
    scorer = common.load_scorer(args)
    frames = common.synthetic_clip(args.frames, args.size)
    x = scorer.to_input(frames)
    return scorer, x, clip_tubes(frames, args.size), predicted_class(scorer, x)


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    scorer, x, tubes, target = setup(args)
    dense_mb = tubes.num_masks * 3 * math.prod(x.shape[1:]) * 4 / 2**20
    print(common.header("3. AOSA ÷ dense host masks (authors' style)", args, N=tubes.num_masks,
                        K=tubes.partners.shape[1], dense_mask_array=f"{dense_mb:.0f} MB"),
          flush=True)
    ours = aosa_map(scorer, x, tubes, target, args.batch_size)  # also the warm-ups
    ref = dense_map(scorer, x, tubes, target, args.batch_size)
    diff = common.check_equal(ours, ref, ("aosa", "dense"))
    clock, inside = common.NetworkClock(scorer), {"aosa": [], "dense": []}
    t = common.interleaved({k: clock.measure(lambda f=VARIANTS[k]: f(
        scorer, x, tubes, target, args.batch_size), inside[k]) for k in ("aosa", "dense")},
        args.repeats, scorer.device, warmup=False)
    net = {k: statistics.median(v) for k, v in inside.items()}
    mem = {k: common.in_child("benchmarks.dense_masks:child",
                              settings=common.settings_of(args), variant=k) for k in VARIANTS}
    peak = {k: v["peak_mb"] for k, v in mem.items()}
    extra = {k: max(peak[k] - peak["forwards"], 0.0) for k in ("aosa", "dense")}
    print(common.same_forwards_lines(t, net, "aosa", "dense", tubes.num_masks + 1))
    print(f"peak mem  aosa +{peak['aosa']:.0f} MB, dense +{peak['dense']:.0f} MB, plain forwards "
          f"+{peak['forwards']:.0f} MB (fresh process each): aosa / dense = "
          f"{common.fmt_ratio(peak['aosa'], peak['dense'])} (1 / "
          f"{common.fmt_ratio(peak['dense'], peak['aosa'])}; target <= 1/10)")
    print(f"          over the plain forwards' peak: aosa +{extra['aosa']:.0f} MB, dense "
          f"+{extra['dense']:.0f} MB", flush=True)
    alloc = {retain: common.in_child("benchmarks.dense_masks:allocator_child",
                                     settings=common.settings_of(args), retain=retain)
             for retain in (False, True) if scorer.device.type == "cpu"}
    if alloc:
        d, r = alloc[False], alloc[True]
        print(f"allocator {tubes.num_masks + 1} plain forwards, fresh process each: glibc "
              f"default {d['seconds']:.2f} s ({d['faults']} page faults, {d['kernel_s']:.2f} s "
              f"kernel), freed memory retained {r['seconds']:.2f} s ({r['faults']} faults, "
              f"{r['kernel_s']:.2f} s kernel): retained / default = "
              f"{common.fmt_ratio(r['seconds'], d['seconds'])}", flush=True)
    return {"time": t, "network": net, "memory": mem, "allocator": alloc, "max_diff": diff}


if __name__ == "__main__":
    main()
