"""5. Scaling of exact AOSA: time and peak memory against N (stride) and T (frames).

    python -m benchmarks.scaling [--model r3d_18 --frames 8 --size 56]

N: strides size / 7, size / 14, size / 28 (16, 8, 4 px at 112 px: N = 49, 196, 784) at
``--frames``; T: ``--frames`` × 1, 2, 4 (8, 16, 32 by default) at N = 49 (the smallest N
keeps the run short: the T axis does not depend on it). Box 2 × stride,
K = 3. Each setting runs once in a fresh process (time and peak memory of the AOSA map, clean
forward included; the network initialised before). Expected: time per forward flat (time linear
in N), peak memory flat in N (only ``--batch-size`` masks are ever dense); time and memory grow
with T as the clip does.
"""

from __future__ import annotations

from benchmarks import common
from benchmarks.dense_masks import aosa_map, predicted_class
from transforms.flow import farneback_flow
from transforms.tubes import build_tubes


def child(settings: dict, stride: int) -> dict:
    args, scorer, x = common.child_setup(settings)
    frames = common.synthetic_clip(args.frames, args.size)
    tubes = build_tubes(farneback_flow(frames), stride, (2 * stride, 2 * stride), 3)
    target = predicted_class(scorer, x)
    out = common.peak_growth_mb(lambda: aosa_map(scorer, x, tubes, target, args.batch_size),
                                scorer.device)
    return {**out, "N": tubes.num_masks}


def main(argv: list[str] | None = None) -> dict:
    ap = common.parser(__doc__.splitlines()[0])
    args = ap.parse_args(argv)
    strides = [max(1, args.size // d) for d in (7, 14, 28)]
    settings = [(args.frames, s) for s in strides]
    settings += [(args.frames * f, strides[0]) for f in (2, 4)]
    print(common.header("5. scaling of exact AOSA with N and T", args,
                        strides=strides, frames=[args.frames * f for f in (1, 2, 4)],
                        runs="one fresh process per setting"), flush=True)
    rows = []
    for frames, stride in settings:
        st = {**common.settings_of(args), "frames": frames}
        r = common.in_child("benchmarks.scaling:child", settings=st, stride=stride)
        rows.append({"T": frames, "stride": stride, **r})
        per = r["seconds"] / (r["N"] + 1)
        print(f"T {frames:>3}  stride {stride:>2}  N {r['N']:>4}: {r['seconds']:8.2f} s "
              f"({1000 * per:7.1f} ms per forward), peak +{r['peak_mb']:.0f} MB", flush=True)
    base = rows[0]
    base_per = base["seconds"] / (base["N"] + 1)
    print(f"against T = {base['T']}, N = {base['N']}:")
    for r in rows:
        per = r["seconds"] / (r["N"] + 1)
        print(f"  T {r['T']:>3} N {r['N']:>4}: time x {r['seconds'] / base['seconds']:.2f} "
              f"(forwards x {(r['N'] + 1) / (base['N'] + 1):.2f}; time per forward x "
              f"{per / base_per:.2f}), peak memory x "
              f"{common.fmt_ratio(r['peak_mb'], base['peak_mb'])}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
