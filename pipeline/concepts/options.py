"""Command line of ``run_pipeline.py concepts`` (docs/CONCEPTS.md lists every option)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from transforms.tcav import CLASSIFIERS, POOLS


@dataclass(frozen=True)
class ConceptOptions:
    """The concepts job's own settings (Beam's options are passed through)."""

    input: str
    concepts: str
    output: str
    model: str = "synth_small3d"
    checkpoint: str | None = None
    class_names: str | None = None
    num_frames: int | None = None
    size: int | None = None
    frame_stride: int = 1
    layers: tuple[str, ...] = ()
    targets: str = "label"
    random: str | None = None
    random_runs: int = 20
    alpha: float = 0.05
    pool: str = "space"
    cav_classifier: str = "sgd"
    concept_fraction: float = 2 / 3
    min_concept_clips: int = 10
    min_cav_accuracy: float = 0.6
    discover: int = 0
    discover_members: int = 20
    tubes_per_clip: int = 3
    batch_size: int = 8
    device: str = "auto"
    threads: int = 0
    seed: int = 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="run_pipeline.py concepts",
        description="Video-TCAV over a dataset: how much does each concept (a folder of "
                    "example clips) drive each class? Writes OUT/concepts/ (Parquet). Any "
                    "Beam option is accepted too. See docs/CONCEPTS.md.")
    a = ap.add_argument
    a("--input", required=True, help="clips whose classes are tested: directory, glob or "
                                     "CSV/JSONL manifest (with 'label' for --targets label)")
    a("--concepts", required=True, help="directory with one sub-folder of example clips (or "
                                        "still images) per concept, or a manifest with "
                                        "columns video, concept")
    a("--output", required=True, help="output directory (OUT/concepts/, OUT/concepts_cache/)")
    a("--model", default="synth_small3d", help="registered network or package.module:factory")
    a("--checkpoint", default=None, help="weights file or URI")
    a("--class-names", dest="class_names", default=None, help="one class name per line")
    a("--num-frames", dest="num_frames", type=int, default=None, help="frames per clip")
    a("--size", type=int, default=None, help="square input side in px")
    a("--frame-stride", dest="frame_stride", type=int, default=1, help="every n-th frame")
    a("--layers", default="", help="comma list of module names (default: the two deepest "
                                   "5-D blocks up to the Grad-CAM layer where TCAV is not "
                                   "degenerate)")
    a("--targets", default="label", help="'label' (each clip's own label) or a comma list of "
                                         "class names / indices tested on every clip")
    a("--random", default=None, help="clips random sets are drawn from (default: --input)")
    a("--random-runs", dest="random_runs", type=int, default=20, help="R runs per concept")
    a("--alpha", type=float, default=0.05, help="significance level before Bonferroni")
    a("--pool", default="space", choices=POOLS, help="space: average over H, W (keeps C, T); "
                                                     "none: flatten C·T·H·W")
    a("--cav-classifier", dest="cav_classifier", default="sgd", choices=CLASSIFIERS)
    a("--concept-fraction", dest="concept_fraction", type=float, default=2 / 3,
      help="share of a concept's clips drawn fresh in each run")
    a("--min-concept-clips", dest="min_concept_clips", type=int, default=10)
    a("--min-cav-accuracy", dest="min_cav_accuracy", type=float, default=0.6,
      help="rows whose CAVs' mean held-out accuracy is lower are written, flagged and "
           "excluded from significance")
    a("--discover", type=int, default=0, help="K: cluster the input clips' top tube "
                                              "proposals into K discovered concepts")
    a("--discover-members", dest="discover_members", type=int, default=20,
      help="proposals closest to a cluster's centre that form its concept")
    a("--tubes-per-clip", dest="tubes_per_clip", type=int, default=3)
    a("--batch-size", dest="batch_size", type=int, default=8)
    a("--device", default="auto")
    a("--threads", type=int, default=0, help="torch threads per worker (0: default)")
    a("--seed", type=int, default=0, help="seed of random weights")
    return ap


class OptionError(ValueError):
    """A bad option; the message names it."""


def parse(argv: Sequence[str]) -> tuple[ConceptOptions, list[str]]:
    """(the job's options, the remaining Beam arguments). Raises OptionError on a bad value."""
    ap = parser()
    ap.error = lambda message: (_ for _ in ()).throw(OptionError(message))  # type: ignore
    ns, rest = ap.parse_known_args(list(argv))
    values = vars(ns)
    values["layers"] = tuple(x.strip() for x in values["layers"].split(",") if x.strip())
    opts = ConceptOptions(**values)
    checks = [
        (opts.random_runs >= 2, f"--random-runs must be >= 2, got {opts.random_runs}"),
        (0 < opts.alpha < 1, f"--alpha must be in (0, 1), got {opts.alpha}"),
        (0 < opts.concept_fraction <= 1,
         f"--concept-fraction must be in (0, 1], got {opts.concept_fraction}"),
        (opts.min_concept_clips >= 3,
         f"--min-concept-clips must be >= 3, got {opts.min_concept_clips}"),
        (opts.discover >= 0, f"--discover must be >= 0, got {opts.discover}"),
        (opts.batch_size >= 1, f"--batch-size must be >= 1, got {opts.batch_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise OptionError(message)
    return opts, rest
