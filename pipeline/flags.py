"""vidxai's command-line flags, declared on a plain ``argparse`` parser.

:class:`pipeline.options.VidxaiOptions` (the Beam ``PipelineOptions`` subclass) declares them
through :func:`add_arguments`; ``run_pipeline.py --help`` calls it directly, so printing the help
imports neither Beam nor torch.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every vidxai flag (name, default, help) to ``parser``."""
    a = parser.add_argument
    # Not argparse-required: Beam parses every imported options class on every
    # Pipeline.run(), so a required flag here would break unrelated pipelines in the same
    # process. config_from_options reports a missing one.
    a("--input", default=None,
      help="directory of videos, a glob, or a CSV/JSONL manifest (columns: video, "
           "optional label, start_frame, boxes)")
    a("--output", default=None, help="output directory or any Beam FileSystems URI")
    a("--model", default="tiny",
      help="registered network (see --list-models), or your own: package.module:factory "
           "(a callable returning an nn.Module; give --num-frames and --size)")
    a("--checkpoint", default=None,
      help="weights: a path or FileSystems URI (gs://, s3://, ...) of a .safetensors file "
           "or a torch state_dict (read with weights_only=True)")
    a("--num-classes", dest="num_classes", type=int, default=None,
      help="output classes (default: the network's; a factory's is measured)")
    a("--mean", type=_floats, default=None,
      help="RGB mean on the [0, 1] scale, e.g. 0.45,0.45,0.45 (default: the network's)")
    a("--std", type=_floats, default=None,
      help="RGB standard deviation on the [0, 1] scale (default: the network's)")
    a("--class-names", dest="class_names", default=None,
      help="file or URI with one class name per line (default: the network's)")
    a("--layer", default=None,
      help="the network's layer for layer-based methods (default: the registry's)")
    a("--methods", default="aosa",
      help="comma list of methods: aosa, aosa_sgl, aosa_approx, aosa_sgl_approx, aosa_t, "
           "aosa_t_sgl, osa, gradcam, gradcam_frame, step, fep, ep, and the references "
           "random, center")
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
    a("--score", default="prob",
      help="what methods measure: prob (softmax probability of the target, the paper's f) "
           "| logit")
    a("--fill", default=None,
      help="occlusion fill for every method: mean (dataset-mean colour) | blur | "
           "local_mean (mean of a patch around each voxel, conditional sampling); default: "
           "each method's own (mean; AOSA-approx: local_mean)")
    a("--fill-sigma", dest="fill_sigma", type=float, default=None,
      help="blur fill: Gaussian sigma in px (default: 5 px at 112 px, scaled)")
    a("--fill-window", dest="fill_window", type=int, default=None,
      help="local_mean fill: patch side in px (default: 36 px at 112 px, scaled)")
    a("--no-approx-adjust", dest="approx_adjust", action="store_false",
      help="AOSA-approx without the derivative adjustment of outlying estimates (§3.5.3)")
    a("--t-window", dest="t_window", type=int, default=None,
      help="AOSA-T: temporal window of the tubes in frames (default: the method's)")
    a("--t-hop", dest="t_hop", type=int, default=None,
      help="AOSA-T: hop between windows in frames (default: the method's)")
    a("--ep-iterations", dest="ep_iterations", type=int, default=None,
      help="STEP / F-EP: optimiser iterations (default: the method's CPU default)")
    a("--ep-areas", dest="ep_areas", type=_floats, default=None,
      help="STEP / F-EP: preserved areas, e.g. 0.05,0.1,0.15 (default: the method's)")
    a("--fep-keep", dest="fep_keep", type=float, default=None,
      help="F-EP: fraction of the lowest DCT frequencies kept per axis (default: the "
           "method's)")
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
    a("--incremental", action="store_true",
      help="exact occlusion methods recompute each layer only where the occluded box "
           "reaches (incremental inference; equal maps, fewer FLOPs)")
    a("--max-failed-fraction", dest="max_failed_fraction", type=float, default=0.1,
      help="fail the run (exit 1, after writing what it has) when more than this fraction "
           "of the clips was dead-lettered (default 0.1: a few broken videos are data, "
           "more is a broken job; a run that writes nothing always fails)")
    a("--break-lock", dest="break_lock", action="store_true",
      help="take over the output's lease (OUTPUT/_lock) even when another run seems to "
           "hold it (use only when that run is known to be dead)")
    a("--no-progress", dest="progress", action="store_false",
      help="no progress line on stderr (local runs print one)")
    a("--recompute", action="store_true",
      help="explain every clip again, replacing this configuration's rows (default: only "
           "what --output does not hold yet)")
    a("--clips-per-video", dest="clips_per_video", type=int, default=None,
      help="N clips per video, uniformly spaced over its whole length (default: one, "
           "from the first frame)")
    a("--clip-hop", dest="clip_hop", type=int, default=None,
      help="sliding clips: one clip every FRAMES video frames over the whole video")
    a("--clips-per-file", dest="clips_per_file", type=int, default=64,
      help="a worker commits its finished clips to new Parquet files every this many clips "
           "(and at the end of each bundle): the most a crash can lose per worker")
    a("--max-file-mb", dest="max_file_mb", type=int, default=256,
      help="... or once its buffered maps reach this many MB (bounds saliency files)")
    a("--saliency-dtype", dest="saliency_dtype", default="float16",
      help="stored maps: float32 | float16 | uint8 (min-max quantised; README: errors)")
    a("--saliency-pool", dest="saliency_pool", type=_pool, default=(1, 1),
      help="store maps mean-pooled by T,S frames × pixels, e.g. 2,4 (default 1,1: none)")


def _pool(text: str) -> tuple[int, int]:
    try:
        pt, ps = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T,S (two integers, e.g. 2,4), got {text!r}"
                                         ) from None
    return pt, ps


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from None
