"""Speed check: ``channels_last_3d`` and bf16 autocast for one network's forwards.

    python -m benchmarks.memory_format [--model r3d_18 --frames 8 --size 56 --repeats 5]

Batched forwards (``--batch-size``) of one clip under ``inference_mode``, in the four
combinations of memory format (contiguous, ``channels_last_3d``) and precision (fp32, bf16
autocast), interleaved; ratios against contiguous fp32. The registry's ``channels_last`` flag
says which format the pipeline feeds each network (``ModelSpec.channels_last``).
"""

from __future__ import annotations

import torch

from benchmarks import common


def main(argv: list[str] | None = None) -> dict:
    args = common.parser(__doc__.splitlines()[0], repeats=5).parse_args(argv)
    scorer = common.load_scorer(args)
    x = torch.randn(args.batch_size, 3, args.frames, args.size, args.size, device=scorer.device)
    amp = "cuda" if scorer.device.type == "cuda" else "cpu"
    low = torch.float16 if amp == "cuda" else torch.bfloat16

    def forward(fmt: torch.memory_format, dtype: torch.dtype | None):
        def run() -> None:
            with torch.inference_mode(), torch.autocast(amp, dtype=dtype or torch.float32,
                                                        enabled=dtype is not None):
                scorer.model(x.contiguous(memory_format=fmt))
        return run

    variants = {f"{name} {prec}": forward(fmt, dtype)
                for name, fmt in (("contiguous", torch.contiguous_format),
                                  ("channels_last_3d", torch.channels_last_3d))
                for prec, dtype in (("fp32", None), (str(low).split(".")[1], low))}
    print(common.header("memory format and autocast", args,
                        spec_channels_last=scorer.spec.channels_last), flush=True)
    t = common.interleaved(variants, args.repeats, scorer.device)
    base = t["contiguous fp32"]
    for name, sec in t.items():
        print(f"{name:<28} {sec / args.batch_size:.4f} s per clip, x {base / sec:.2f} "
              "the speed of contiguous fp32")
    return {"time": t}


if __name__ == "__main__":
    main()
