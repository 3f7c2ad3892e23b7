"""Command-line options (a Beam ``PipelineOptions`` subclass) → :class:`RunConfig`."""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.config import RunConfig

LOCAL_RUNNER = "FnApiRunner"  # Beam 2.77's DirectRunner first tries to download Prism


class VidxaiOptions(PipelineOptions):
    """vidxai's own options; every standard Beam option is accepted as well."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        a = parser.add_argument
        a("--input", required=True,
          help="directory of videos, a glob, or a CSV/JSONL manifest (columns: video, "
               "optional label, start_frame, boxes)")
        a("--output", required=True, help="output directory or any Beam FileSystems URI")
        a("--model", default="tiny", help="registered network (see --list-models)")
        a("--checkpoint", default=None,
          help="local state_dict (.pt/.pth read with weights_only=True, or .safetensors)")
        a("--methods", default="aosa",
          help="comma list of methods: aosa, aosa_sgl, and the references random, center")
        a("--stride", type=int, default=None,
          help="anchor spacing s in px (default: size/14, i.e. N = 196 as in the paper)")
        a("--box-size", dest="box_size", type=int, default=None,
          help="occlusion box side h = w in px (default: 2 × stride)")
        a("--topk", type=int, default=3, help="K co-occurring masks integrated with each mask")
        a("--num-frames", dest="num_frames", type=int, default=None,
          help="frames per clip (default: the model's)")
        a("--frame-stride", dest="frame_stride", type=int, default=1,
          help="take every n-th frame of the video")
        a("--size", type=int, default=None,
          help="square input side in px after resize + centre crop (default: the model's)")
        a("--batch-size", dest="batch_size", type=int, default=8,
          help="occluded clips per forward batch on the scoring device")
        a("--device", default="auto", help="auto | cpu | cuda")
        a("--precision", default="auto",
          help="auto (fp16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")
        a("--target", default="predicted",
          help="class to explain: predicted | label | a class index | a class name")
        a("--aggregation", default="mean",
          help="AOSA map: mean (score drop averaged over covering masks) | paper (Eq. 2)")
        a("--no-metrics", dest="metrics", action="store_false",
          help="skip deletion/insertion and pointing-game metrics")
        a("--metric-steps", dest="metric_steps", type=int, default=28,
          help="deletion/insertion steps (the paper: 28)")
        a("--pointing-radius", dest="pointing_radius", type=float, default=None,
          help="pointing-game radius in px (default: 7 px at 112 px, scaled with --size)")
        a("--insertion-blur", dest="insertion_blur", type=float, default=0.0,
          help="insertion starts from the clip blurred with this Gaussian sigma in px "
               "(RISE's variant); 0: from the mean colour, like deletion's fill")
        a("--seed", type=int, default=0, help="seed for random weights")
        a("--cache-dir", dest="cache_dir", default=None,
          help="where downloaded/converted weights are cached (default $VIDXAI_CACHE or "
               "~/.cache/vidxai)")
        a("--threads", type=int, default=0, help="torch CPU threads per worker (0: torch's)")


def config_from_options(options: PipelineOptions) -> RunConfig:
    """A resolved, validated RunConfig; ValueError with a one-line reason otherwise."""
    o = options.view_as(VidxaiOptions)
    cfg = RunConfig(
        input=o.input, output=o.output, model=o.model, checkpoint=o.checkpoint,
        methods=tuple(o.methods.split(",")), stride=o.stride, box_size=o.box_size,
        topk=o.topk, num_frames=o.num_frames, size=o.size, frame_stride=o.frame_stride,
        batch_size=o.batch_size, device=o.device, precision=o.precision, target=o.target,
        aggregation=o.aggregation, metrics=o.metrics, metric_steps=o.metric_steps,
        pointing_radius=o.pointing_radius, insertion_blur=o.insertion_blur, seed=o.seed,
        cache_dir=o.cache_dir,
        threads=o.threads)
    return cfg.resolve()


def with_default_runner(options: PipelineOptions) -> PipelineOptions:
    """Pick FnApiRunner unless the user chose a runner."""
    std = options.view_as(StandardOptions)
    if not std.runner:
        std.runner = LOCAL_RUNNER
    return options
