"""The run's own options (input, model, device, ...), declared once, and the command line built
from every declaration.

The methods declare the options they read next to their code
(:class:`~transforms.options.Option` in ``transforms/``); :func:`pipeline.config.declared_options`
joins both. ``run_pipeline.py --help`` must not import torch (it would take seconds), so it
reads the methods' declarations from their source (:func:`source_declarations`, literals
only, nothing executed) instead of importing the method modules; ``tests/test_options.py``
checks that both give the same flags.
This module imports neither Beam nor torch.
"""

from __future__ import annotations

import argparse
import ast
import builtins
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import transforms.options as options_module
from transforms.options import (
    COMMON,
    EXECUTION,
    RUN,
    Option,
    at_least,
    floats,
    in_range,
    int_pair,
    names,
)

TRANSFORMS = Path(options_module.__file__).parent


def _sources(root: Path, marker: str) -> Iterator[ast.Module]:
    """The parsed modules below ``root`` whose text holds ``marker``."""
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if marker in text:
            yield ast.parse(text, str(path))


def builtin_methods(root: Path = TRANSFORMS / "methods") -> tuple[str, ...]:
    """The names registered with ``@register_method("name")`` in ``root``'s modules (sorted),
    read from the source: the built-in methods, without importing torch."""
    found = [d.args[0].value for tree in _sources(root, "@register_method(")
             for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
             for d in node.decorator_list
             if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "register_method"]
    return tuple(sorted(found))


def _required(value: Any, _) -> str | None:
    return None if value else "is required"


def _rgb(positive: bool):
    def check(value: tuple[float, ...] | None, _) -> str | None:
        if value is None or (len(value) == 3 and (not positive or min(value) > 0)):
            return None
        return f"needs three values (R, G, B){' > 0' if positive else ''}, got {value}"

    return check


def _methods(value: tuple[str, ...], _) -> str | None:
    from transforms.methods.base import available_methods

    known = available_methods()
    if not value:
        return "is empty"
    for m in value:
        if m not in known:
            return f"names an unknown method {m!r}; choose from {', '.join(known)}"
    if len(set(value)) != len(value):
        return f"names a method twice: {','.join(value)}"
    return None


def _precision(value: str, _) -> str | None:
    from transforms.scoring import PRECISIONS

    return None if value in PRECISIONS else (
        f"must be one of {', '.join(PRECISIONS)}, got {value!r}")


def _device(value: str, _) -> None:
    from transforms.scoring import check_device_name

    check_device_name(value)  # raises with its own one-line message


def _dtype(value: str, _) -> str | None:
    from transforms.encoding import ENCODINGS

    return None if value in ENCODINGS else (
        f"must be one of {', '.join(ENCODINGS)}, got {value!r}")


def _pool(value: tuple[int, int], values: Mapping[str, Any]) -> None:
    from transforms.encoding import check_pool

    check_pool((values["num_frames"], values["size"], values["size"]), tuple(value))


def _uniform_or_sliding(value: int | None, values: Mapping[str, Any]) -> str | None:
    if value is not None and value < 1:
        return f"must be >= 1, got {value}"
    if value is not None and values["clip_hop"] is not None:
        return "and --clip-hop exclude each other (uniform clips or sliding clips)"
    return None


# The order of the COMMON options is the config-hash table's (docs/USER_GUIDE.md).
JOB_OPTIONS: tuple[Option, ...] = (
    # Not argparse-required: Beam parses every imported options class on every Pipeline.run(),
    # so a required flag would break unrelated pipelines in the same process.
    Option("input", str, None, place=EXECUTION, check=_required,
           help="directory of videos, a glob, or a CSV/JSONL manifest (columns: video, "
                "optional label, start_frame, boxes, frame_range)"),
    Option("output", str, None, place=EXECUTION, check=_required,
           help="output directory or any Beam FileSystems URI; a run adds to it only the clip "
                "× method rows this configuration does not have yet"),
    Option("model", str, "tiny", place=COMMON,
           help="registered network (see --list-models), or your own: package.module:factory "
                "(a callable returning an nn.Module; give --num-frames and --size)"),
    Option("checkpoint", str, None, place=EXECUTION,
           help="weights: a path or FileSystems URI (gs://, s3://, ...) of a .safetensors file "
                "or a torch state_dict (read with weights_only=True); without it "
                "i3d_kinetics400 and synth_small3d load their own pretrained weights, the "
                "others seeded random ones (and say so)"),
    Option("num_classes", int, None, place=COMMON, check=at_least(1),
           help="output classes (default: the network's; a factory's is measured)"),
    Option("mean", floats, None, place=COMMON, check=_rgb(False),
           help="RGB mean on the [0, 1] scale, e.g. 0.45,0.45,0.45 (default: the network's)"),
    Option("std", floats, None, place=COMMON, check=_rgb(True),
           help="RGB standard deviation on the [0, 1] scale (default: the network's)"),
    Option("class_names", str, None, place=EXECUTION,
           help="file or URI with one class name per line (default: the network's)"),
    Option("seed", int, 0, "seed for random weights", place=COMMON),
    Option("weights_sha256", str, None, "the weights' content (computed by the job)",
           place=COMMON, flag="", label="the weights' SHA-256"),
    Option("num_frames", int, None, "frames per clip (default: the model's)", place=COMMON),
    Option("size", int, None, place=COMMON, check=at_least(8),
           help="square input side in px after resize + centre crop (default: the model's)"),
    Option("frame_stride", int, 1, "take every n-th frame of the video", place=COMMON,
           check=at_least(1)),
    Option("target", str, "predicted", place=COMMON,
           help="class to explain: predicted | label | a class index | a class name"),
    Option("precision", str, "auto", place=COMMON, check=_precision,
           help="auto (fp16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16"),
    Option("metrics", bool, True, "skip deletion/insertion and pointing-game metrics",
           place=COMMON),
    Option("metric_steps", int, 28, "deletion/insertion steps (the paper: 28)", place=COMMON,
           check=at_least(1)),
    Option("pointing_radius", float, None, place=COMMON, check=at_least(0),
           help="pointing-game radius in px (default: 7 px at 112 px, scaled with --size)",
           resolve=lambda v, c: 7.0 * c["size"] / 112 if v is None else v),
    Option("insertion_blur", float, 0.0, place=COMMON, check=at_least(0),
           help="insertion starts from the clip blurred with this Gaussian sigma in px "
                "(RISE's variant); 0: from the mean colour, like deletion's fill"),
    Option("methods", names, ("aosa",), place=RUN, check=_methods,
           help=f"comma list of methods: {', '.join(builtin_methods())} (random and center are "
                "references that explain nothing)",
           resolve=lambda v, _: tuple(m.strip() for m in v if m.strip())),
    Option("batch_size", int, 8, "occluded clips per forward batch on the scoring device",
           place=EXECUTION, check=at_least(1)),
    Option("device", str, "auto", "auto | cpu | cuda | cuda:N", place=EXECUTION, check=_device),
    Option("cache_dir", str, None, place=EXECUTION,
           help="where downloaded/converted weights are cached (default $VIDXAI_CACHE or "
                "~/.cache/vidxai)"),
    Option("threads", int, 0, place=EXECUTION,
           help="torch / OpenCV CPU threads per worker (0: the cores shared out over the "
                "workers; torch's default with one worker)"),
    Option("incremental", bool, False, place=EXECUTION,
           help="exact occlusion methods recompute each layer only where the occluded voxels "
                "reach (incremental inference; equal maps, fewer FLOPs)"),
    Option("max_failed_fraction", float, 0.1, place=EXECUTION, check=in_range(0, 1),
           help="fail the run (exit 1, after writing what it has) when more than this fraction "
                "of the clips was dead-lettered (default 0.1: a few broken videos are data, "
                "more is a broken job; a run that writes nothing always fails)"),
    Option("break_lock", bool, False, place=EXECUTION,
           help="take over the output's lease (OUTPUT/_lock) even when another run seems to "
                "hold it (use only when that run is known to be dead)"),
    Option("progress", bool, True, "no progress line on stderr (local runs print one)",
           place=EXECUTION),
    Option("recompute", bool, False, place=EXECUTION,
           help="explain every clip again, replacing this configuration's rows (default: only "
                "what --output does not hold yet)"),
    Option("clips_per_video", int, None, place=EXECUTION, check=_uniform_or_sliding,
           help="N clips per video, uniformly spaced over its whole length (default: one, "
                "from the first frame)"),
    Option("clip_hop", int, None, place=EXECUTION, check=at_least(1),
           help="sliding clips: one clip every FRAMES video frames over the whole video"),
    Option("clips_per_file", int, 64, place=EXECUTION, check=at_least(1),
           help="a worker commits its finished clips to new Parquet files every this many clips "
                "(and at the end of each bundle): the most a crash can lose per worker"),
    Option("max_file_mb", int, 256, place=EXECUTION, check=at_least(1),
           help="... or once its buffered maps reach this many MB (bounds saliency files)"),
    Option("saliency_dtype", str, "float16", place=EXECUTION, check=_dtype,
           help="stored maps: float32 | float16 | uint8 (min-max quantised; errors: "
                "docs/BENCHMARKS.md#encoding_error)"),
    Option("saliency_pool", int_pair, (1, 1), place=EXECUTION, check=_pool,
           help="store maps mean-pooled by T,S frames × pixels, e.g. 2,4 (default 1,1: none)"),
    Option("workers", int, 1, "worker processes on this machine (from --direct_num_workers)",
           place=EXECUTION, check=at_least(1), flag="", label="--direct_num_workers"),
    Option("weights_uri", str, None, "built-in weights prepared by the driver",
           place=EXECUTION, flag=""),
)


def add_arguments(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Add the flag of each option (those with one) to ``parser``."""
    for o in options:
        if not o.flag:
            continue
        if o.type is bool:
            parser.add_argument(o.flag, dest=o.name, help=o.help,
                                action="store_false" if o.default else "store_true")
        else:
            parser.add_argument(o.flag, dest=o.name, type=o.type, default=o.default,
                                help=o.help)


_HELP_FIELDS = ("name", "type", "default", "help", "place", "flag", "label")


def _value(node: ast.expr) -> Any:
    """A literal, or a name from transforms.options or the builtins (a type, a place)."""
    if isinstance(node, ast.Name):
        found = getattr(options_module, node.id, None)
        return found if found is not None else getattr(builtins, node.id)
    return ast.literal_eval(node)


def source_declarations(root: Path = TRANSFORMS) -> list[Option]:
    """The options declared in ``root``'s modules (module-level ``NAME = Option(...)``), read
    from the source without importing the modules (and torch with them).

    Only what ``--help`` shows is read (name, type, default, help, place, flag, label): these
    must be literals or names from :mod:`transforms.options`; the checks, choices and
    resolutions are left out. ``tests/test_options.py`` checks the result against the imported
    declarations.
    """
    found = []
    for tree in _sources(root, "Option("):
        for node in tree.body:
            call = node.value if isinstance(node, ast.Assign) else None
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Option":
                fields = dict(zip(_HELP_FIELDS, call.args[:4], strict=False))
                fields.update((k.arg, k.value) for k in call.keywords if k.arg in _HELP_FIELDS)
                found.append(Option(**{k: _value(v) for k, v in fields.items()}))
    return found


def help_options() -> tuple[Option, ...]:
    """Every option, for ``--help``: the run's and the methods' (read from their source)."""
    own = {o.name for o in JOB_OPTIONS}
    return JOB_OPTIONS + tuple(o for o in source_declarations() if o.name not in own)
