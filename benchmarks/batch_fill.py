"""8. What batching across clips would save: the cost of a clip's partly filled batches.

    python -m benchmarks.batch_fill [--model r3d_18 --frames 8 --size 56 --repeats 3]

A clip's N masks are scored ``--batch-size`` at a time, so each clip ends with one partly
filled batch (N mod B masks), and its clean forward runs at batch 1; the deletion / insertion
metrics (28 steps: 2 × 29 forwards) end the same way. Batching across clips would pack those
remainders with other clips' masks. This measures plain forwards at every batch size 1 … B
(interleaved, median of ``--repeats``) and prints, per clip, the time of the batches as the
engine runs them against the time of the same forwards packed into full batches (the
per-clip share of t(B) · (forwards / B)); the difference is the most cross-clip batching
could save. Nothing here changes the pipeline.
"""

from __future__ import annotations

import torch

from benchmarks import common
from transforms.tubes import num_anchors

WORKLOADS = {  # name → forwards per clip, as (count at batch 1, masks scored at batch B),
    # given N of the default stride (size / 14) and of a coarse one (size / 7)
    "aosa (N masks + clean forward)": lambda n, _: (1, n),
    "aosa, coarse stride (N / 4 + clean)": lambda _, n_coarse: (1, n_coarse),
    "deletion + insertion (28 steps)": lambda n, _: (0, 2 * 29),
}


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__.splitlines()[0], repeats=3).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    scorer = common.load_scorer(args)
    n = num_anchors(args.size, args.size, max(1, args.size // 14))
    n_coarse = num_anchors(args.size, args.size, max(1, args.size // 7))
    b = args.batch_size
    print(common.header("8. batching across clips: the cost of partly filled batches", args,
                        N=n), flush=True)
    x = torch.randn(b, 3, args.frames, args.size, args.size, device=scorer.device)

    def forward(k: int):
        def run() -> None:
            with torch.inference_mode():
                scorer.logits(x[:k])
        return run

    t = common.interleaved({k: forward(k) for k in range(1, b + 1)}, args.repeats,
                           scorer.device)
    print("forward seconds per batch size: " + ", ".join(f"{k}: {v:.3f}" for k, v in t.items()))
    out = {}
    for name, work in WORKLOADS.items():
        singles, masks = work(n, n_coarse)
        engine = singles * t[1] + (masks // b) * t[b] + (t[masks % b] if masks % b else 0.0)
        packed = (singles + masks) / b * t[b]
        out[name] = (engine, packed)
        print(f"{name:<34} per clip: as run {engine:.3f} s, packed across clips {packed:.3f} s"
              f" -> cross-clip batching would save {100 * (1 - packed / engine):.1f} %")
    return out


if __name__ == "__main__":
    main()
