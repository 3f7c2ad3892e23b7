"""6. Flow + tubes per clip ÷ scoring per clip (AOSA).

    python -m benchmarks.flow_share [--model r3d_18 --frames 8 --size 56 --repeats 1]

Per clip: Farneback flow of the T − 1 frame pairs (:func:`transforms.flow.farneback_flow`) and
the tubes (tracking, co-occurrence, partners, boxes: :func:`transforms.tubes.build_tubes`,
stride size / 14, box 2 × stride, K = 3) against scoring the clip with exact AOSA (clean forward
+ N masks). Target: ≤ 5 %. When it is missed cProfile's heaviest calls of flow + tubes follow.
"""

from __future__ import annotations

from benchmarks import common
from benchmarks.approx_vs_exact import profile
from benchmarks.dense_masks import aosa_map, predicted_class
from transforms.flow import farneback_flow
from transforms.tubes import build_tubes

TARGET = 0.05


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__.splitlines()[0], repeats=1).parse_args(argv)
    scorer = common.load_scorer(args)
    frames = common.synthetic_clip(args.frames, args.size)
    x = scorer.to_input(frames)
    stride = max(1, args.size // 14)
    target = predicted_class(scorer, x)
    state: dict = {}

    def flow() -> None:
        state["flow"] = farneback_flow(frames)

    def tubes() -> None:
        state["tubes"] = build_tubes(state["flow"], stride, (2 * stride, 2 * stride), 3)

    flow()
    tubes()
    print(common.header("6. flow + tubes ÷ scoring, per clip", args,
                        N=state["tubes"].num_masks, K=3, stride=stride), flush=True)
    t = common.interleaved({"flow": flow, "tubes": tubes,
                            "scoring": lambda: aosa_map(scorer, x, state["tubes"], target,
                                                        args.batch_size)},
                           args.repeats, scorer.device)
    share = (t["flow"] + t["tubes"]) / t["scoring"]
    print(f"flow {t['flow']:.4f} s + tubes {t['tubes']:.4f} s per clip, scoring (AOSA, "
          f"{state['tubes'].num_masks + 1} forwards) {t['scoring']:.2f} s: "
          f"(flow + tubes) / scoring = {100 * share:.2f} % (target <= 5 %: "
          f"{'met' if share <= TARGET else 'MISSED'})", flush=True)
    if share > TARGET:
        print(profile(lambda: (flow(), tubes())))
    return {"time": t, "share": share}


if __name__ == "__main__":
    main()
