"""Frozen run configuration, validated once in the driver, and its hash.

Every value that changes a result is part of :meth:`RunConfig.result_key`, whose hash is
written next to every output row: rows with equal hashes were computed the same way. The
weights enter by content (their SHA-256, from the model handler), never by file name.

Each option is in exactly one of three places: :data:`COMMON` (in every method's hash),
:data:`EXECUTION_ONLY` (in none), or read by some methods, which declare it next to their code
(``Method.reads``, :meth:`~transforms.methods.base.Method.options_read`): a method's hash covers
the common options and the options it reads, nothing else (:func:`hash_options`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

from models.registry import ModelSpec
from transforms.encoding import ENCODINGS, check_pool
from transforms.explain import ExplainSettings
from transforms.methods.aosa import AGGREGATIONS
from transforms.methods.base import FILL_PARAMETERS, METHODS, MethodOptions, available_methods
from transforms.model_handler import ModelConfig, VideoModelHandler
from transforms.perturbation import FILLS, SCORES
from transforms.scoring import PRECISIONS, check_device_name
from transforms.sink import StoreOptions
from transforms.tubes import num_anchors

TARGET_KEYWORDS = ("predicted", "label")
# Options in every method's hash. Every row of every method depends on them: the network and
# its weights (model, num_classes, mean, std, seed of random weights, weights by SHA-256), the
# clip it sees (num_frames, size, frame_stride), the class explained (target) and the numerics
# (precision). The metric options are here too because every method's metrics row carries
# the metric columns (also random's and center's, whose maps use no network).
COMMON = ("model", "num_classes", "mean", "std", "seed", "weights_sha256", "num_frames",
          "size", "frame_stride", "target", "precision", "metrics", "metric_steps",
          "pointing_radius", "insertion_blur")
# Options that change how a run executes, never what it computes (kept out of every hash).
EXECUTION_ONLY = ("input", "output", "device", "threads", "cache_dir", "batch_size",
                  "max_failed_fraction", "progress", "checkpoint", "class_names", "recompute",
                  "clips_per_video", "clip_hop", "clips_per_file", "max_file_mb",
                  "saliency_dtype", "saliency_pool", "workers", "incremental", "weights_uri",
                  "break_lock")
# In the whole run's hash only (each method's rows do not depend on which others ran).
RUN_ONLY = ("methods",)


def hash_options(method: str, fill: str | None = None) -> tuple[str, ...]:
    """The options in ``method``'s ``config_hash``: :data:`COMMON` and what it declares it
    reads with ``--fill`` = ``fill`` (:meth:`~transforms.methods.base.Method.options_read`);
    a registered factory that declares nothing gets every method option (never reused wrongly).

    Raises:
        ValueError: unknown method.
    """
    if method not in available_methods():
        raise ValueError(f"unknown method {method!r}; choose from "
                         f"{', '.join(available_methods())}")
    declared = getattr(METHODS[method], "options_read", None)
    return COMMON + (method_options() if declared is None else tuple(declared(fill)))


def method_options() -> tuple[str, ...]:
    """Every option some method reads (sorted): neither common nor execution-only."""
    reads = {o for m in available_methods() for o in getattr(METHODS[m], "reads", ())}
    params = {p for kind in FILL_PARAMETERS.values() for p in kind} if "fill" in reads else set()
    return tuple(sorted(reads | params))


_FLAGS = {"metrics": "--no-metrics", "approx_adjust": "--no-approx-adjust",
          "weights_sha256": "the weights' SHA-256"}


def option_name(field: str) -> str:
    """How the README names a RunConfig field: its command-line flag."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def identity_table() -> str:
    """The README's account of what enters each method's ``config_hash`` (markdown), generated
    from :data:`COMMON` and the methods' declarations."""
    def names(fields) -> str:
        return ", ".join(f"`{n}`" if n.startswith("--") else n
                         for n in map(option_name, fields)) or "none"

    lines = [f"Common to every method: {names(COMMON)}.", "",
             "| method | options in its `config_hash` besides the common ones | fill parameter |",
             "| --- | --- | --- |"]
    for m in available_methods():
        cls = METHODS[m]
        fills = (*FILL_PARAMETERS, None)
        params = dict.fromkeys(p for k in fills for p in cls.options_read(k) if p not in cls.reads)
        when = ["{} with {}".format(f"`{option_name(p)}`", " or ".join(
            f"`--fill {k}`" if k else "no `--fill`" for k in fills if p in cls.options_read(k)))
            for p in params]
        lines.append(f"| `{m}` | {names(cls.reads)} | {'; '.join(when) or '-'} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; see the README's option table for each field."""

    input: str
    output: str
    model: str = "tiny"
    checkpoint: str | None = None
    num_classes: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    class_names: str | None = None
    layer: str | None = None
    methods: tuple[str, ...] = ("aosa",)
    stride: int | None = None  # default: size / 14 (the paper's N = 196)
    box_size: int | None = None  # default: 2 × stride (16 px at s = 8, as the paper)
    topk: int = 3
    num_frames: int | None = None  # default: the model's
    size: int | None = None  # default: the model's
    frame_stride: int = 1
    batch_size: int = 8
    device: str = "auto"
    precision: str = "auto"
    target: str = "predicted"
    score: str = "prob"
    aggregation: str = "mean"
    fill: str | None = None  # default: each method's own (mean colour; AOSA-approx: local mean)
    fill_sigma: float | None = None  # default: 5 px at 112 px, scaled with size
    fill_window: int | None = None  # default: 36 px at 112 px, scaled with size (the paper)
    approx_adjust: bool = True
    t_window: int | None = None  # AOSA-T (default: the method's)
    t_hop: int | None = None
    ep_iterations: int | None = None  # STEP / F-EP (default: the method's)
    ep_areas: tuple[float, ...] | None = None
    fep_keep: float | None = None
    metrics: bool = True
    metric_steps: int = 28
    pointing_radius: float | None = None  # default: 7 px at 112 px, scaled with size
    insertion_blur: float = 0.0
    seed: int = 0
    cache_dir: str | None = None
    threads: int = 0
    max_failed_fraction: float = 0.1
    break_lock: bool = False
    progress: bool = True
    recompute: bool = False
    clips_per_video: int | None = None  # None: one clip per video (or manifest row)
    clip_hop: int | None = None  # sliding clips every this many video frames
    clips_per_file: int = 64
    max_file_mb: int = 256
    saliency_dtype: str = "float16"
    saliency_pool: tuple[int, int] = (1, 1)
    workers: int = 1  # worker processes on this machine (FnApiRunner: direct_num_workers)
    incremental: bool = False
    weights_sha256: str | None = None  # filled by the job after the handler validated them
    weights_uri: str | None = None  # built-in weights prepared by the driver (job.stage_weights)

    def handler(self) -> VideoModelHandler:
        """The model handler of this configuration (picklable; builds the network lazily)."""
        return VideoModelHandler(
            ModelConfig(model=self.model, checkpoint=self.checkpoint,
                        num_classes=self.num_classes, num_frames=self.num_frames,
                        size=self.size, mean=self.mean, std=self.std,
                        class_names=self.class_names, layer=self.layer, seed=self.seed,
                        cache_dir=self.cache_dir, weights_uri=self.weights_uri,
                        weights_sha256=self.weights_sha256 if self.weights_uri else None),
            device=self.device, precision=self.precision, threads=self.thread_budget())

    @property
    def spec(self) -> ModelSpec:
        return self.handler().spec()

    def resolve(self) -> RunConfig:
        """Fill the model-dependent defaults and validate; ValueError with one-line reasons."""
        spec = self.handler().spec()  # raises for unknown models and bad factories
        size = spec.input_size if self.size is None else self.size
        stride = max(1, size // 14) if self.stride is None else self.stride
        cfg = dataclasses.replace(
            self,
            size=size,
            num_frames=spec.num_frames if self.num_frames is None else self.num_frames,
            stride=stride,
            box_size=2 * stride if self.box_size is None else self.box_size,
            pointing_radius=(self.pointing_radius if self.pointing_radius is not None
                             else 7.0 * size / 112),
            fill_sigma=self.fill_sigma if self.fill_sigma is not None else 5.0 * size / 112,
            fill_window=(self.fill_window if self.fill_window is not None
                         else max(1, round(36 * size / 112))),
            methods=tuple(m.strip() for m in self.methods if m.strip()),
        )
        cfg._validate(spec)
        return cfg

    def _validate(self, spec: ModelSpec) -> None:
        assert None not in (self.size, self.num_frames, self.stride, self.box_size)
        checks = [
            (self.size >= 8, f"--size must be >= 8, got {self.size}"),
            (self.num_frames >= max(2, spec.min_frames),
             f"--num-frames must be >= {max(2, spec.min_frames)} for {spec.name}, "
             f"got {self.num_frames}"),
            (not spec.fixed_input or (self.num_frames, self.size)
             == (spec.num_frames, spec.input_size),
             f"{spec.name} only accepts {spec.num_frames} frames of {spec.input_size} px, got "
             f"--num-frames {self.num_frames} --size {self.size}"),
            (self.frame_stride >= 1, f"--frame-stride must be >= 1, got {self.frame_stride}"),
            (1 <= self.stride <= self.size,
             f"--stride must be in [1, {self.size}], got {self.stride}"),
            (1 <= self.box_size <= self.size,
             f"--box-size must be in [1, {self.size}], got {self.box_size}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.metric_steps >= 1, f"--metric-steps must be >= 1, got {self.metric_steps}"),
            (self.pointing_radius is not None and self.pointing_radius >= 0,
             f"--pointing-radius must be >= 0, got {self.pointing_radius}"),
            (self.insertion_blur >= 0,
             f"--insertion-blur must be >= 0, got {self.insertion_blur}"),
            (self.fill_sigma is not None and self.fill_sigma > 0,
             f"--fill-sigma must be > 0, got {self.fill_sigma}"),
            (self.fill_window is not None and 1 <= self.fill_window <= self.size,
             f"--fill-window must be in [1, {self.size}], got {self.fill_window}"),
            (0.0 <= self.max_failed_fraction <= 1.0,
             f"--max-failed-fraction must be in [0, 1], got {self.max_failed_fraction}"),
            (self.t_window is None or 1 <= self.t_window <= self.num_frames,
             f"--t-window must be in [1, {self.num_frames}], got {self.t_window}"),
            (self.t_hop is None or self.t_hop >= 1, f"--t-hop must be >= 1, got {self.t_hop}"),
            (None in (self.t_hop, self.t_window) or self.t_hop <= self.t_window,
             f"--t-hop {self.t_hop} > --t-window {self.t_window} would leave frames that no "
             "window occludes"),
            (self.ep_iterations is None or self.ep_iterations >= 1,
             f"--ep-iterations must be >= 1, got {self.ep_iterations}"),
            (self.ep_areas is None or (len(self.ep_areas) > 0
                                       and all(0 < a < 1 for a in self.ep_areas)),
             f"--ep-areas must be fractions in (0, 1), got {self.ep_areas}"),
            (self.fep_keep is None or 0 < self.fep_keep <= 1,
             f"--fep-keep must be in (0, 1], got {self.fep_keep}"),
            (self.num_classes is None or self.num_classes >= 1,
             f"--num-classes must be >= 1, got {self.num_classes}"),
            (bool(self.methods), "--methods is empty"),
            (self.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.aggregation in AGGREGATIONS,
             f"--aggregation must be one of {', '.join(AGGREGATIONS)}, "
             f"got {self.aggregation!r}"),
            (self.score in SCORES,
             f"--score must be one of {', '.join(SCORES)}, got {self.score!r}"),
            (self.clips_per_video is None or self.clips_per_video >= 1,
             f"--clips-per-video must be >= 1, got {self.clips_per_video}"),
            (self.clip_hop is None or self.clip_hop >= 1,
             f"--clip-hop must be >= 1, got {self.clip_hop}"),
            (None in (self.clip_hop, self.clips_per_video),
             "--clips-per-video and --clip-hop exclude each other (uniform clips or sliding "
             "clips)"),
            (self.clips_per_file >= 1, f"--clips-per-file must be >= 1, got {self.clips_per_file}"),
            (self.max_file_mb >= 1, f"--max-file-mb must be >= 1, got {self.max_file_mb}"),
            (self.saliency_dtype in ENCODINGS,
             f"--saliency-dtype must be one of {', '.join(ENCODINGS)}, "
             f"got {self.saliency_dtype!r}"),
            (self.workers >= 1, f"--direct_num_workers must be >= 1, got {self.workers}"),
            (self.fill is None or self.fill in FILLS,
             f"--fill must be one of {', '.join(FILLS)}, got {self.fill!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.mean is not None and len(self.mean) != 3:
            raise ValueError(f"--mean needs three values (R, G, B), got {self.mean}")
        if self.std is not None and (len(self.std) != 3 or min(self.std) <= 0):
            raise ValueError(f"--std needs three values (R, G, B) > 0, got {self.std}")
        n = num_anchors(self.size, self.size, self.stride)
        if not 0 <= self.topk < n:
            raise ValueError(f"--topk must be in [0, {n - 1}] ({n} masks at stride "
                             f"{self.stride}), got {self.topk}")
        known = available_methods()
        for m in self.methods:
            if m not in known:
                raise ValueError(f"unknown method {m!r} in --methods; choose from "
                                 f"{', '.join(known)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"--methods names a method twice: {','.join(self.methods)}")
        check_pool((self.num_frames, self.size, self.size), tuple(self.saliency_pool))
        check_device_name(self.device)
        self.fixed_target()  # raises for unknown classes

    def fixed_target(self, names: list[str] | None = None) -> int | None:
        """The class index when ``--target`` names one class; None for predicted/label.

        Args:
            names: the network's class names (default: from the handler).
        """
        if self.target in TARGET_KEYWORDS:
            return None
        spec = self.spec
        if self.target.lstrip("-").isdigit():
            idx = int(self.target)
            if not 0 <= idx < spec.num_classes:
                raise ValueError(f"--target {idx} is out of range: {spec.name} has "
                                 f"{spec.num_classes} classes")
            return idx
        names = names if names is not None else self.handler().class_names()
        if names and self.target in names:
            return names.index(self.target)
        raise ValueError(f"--target {self.target!r} is not 'predicted', 'label', a class index "
                         f"or a class name of {spec.name}")

    def method_options(self) -> MethodOptions:
        return MethodOptions(aggregation=self.aggregation, fill=self.fill,
                             fill_sigma=float(self.fill_sigma or 0.0),
                             fill_window=int(self.fill_window or 1), layer=self.layer,
                             approx_adjust=self.approx_adjust, window=self.t_window,
                             hop=self.t_hop, ep_iterations=self.ep_iterations,
                             ep_areas=self.ep_areas, fep_keep=self.fep_keep)

    def store_options(self) -> StoreOptions:
        """How the sink stores maps and bounds its files."""
        return StoreOptions(encoding=self.saliency_dtype, pool=tuple(self.saliency_pool),
                            clips_per_file=self.clips_per_file,
                            max_file_bytes=self.max_file_mb << 20)

    def thread_budget(self) -> int:
        """torch / OpenCV threads per worker: ``--threads``, else the cores shared out over
        the worker processes of this machine (0: the libraries' own default, one worker)."""
        if self.threads > 0:
            return self.threads
        if self.workers > 1:
            return max(1, (os.cpu_count() or 1) // self.workers)
        return 0

    def explain_settings(self) -> ExplainSettings:
        return ExplainSettings(
            methods=self.methods, target=self.target, fixed_target=self.fixed_target(),
            batch_size=self.batch_size, method_options=self.method_options(),
            score=self.score, metrics=self.metrics, metric_steps=self.metric_steps,
            pointing_radius=float(self.pointing_radius), insertion_blur=self.insertion_blur,
            incremental=self.incremental)

    def result_key(self, method: str | None = None) -> dict:
        """The fields that change results (the weights by their SHA-256, never by file name).

        Args:
            method: the key of one method's rows: :data:`COMMON` and the options the method
                reads (:func:`hash_options`), nothing else. None: the whole run's key, the
                union of its methods' keys and the method list.
        """
        if self.weights_sha256 is None:
            raise ValueError("config_hash needs weights_sha256 (validate the model first)")
        if method is not None:
            names = hash_options(method, self.fill)
        else:
            names = tuple(dict.fromkeys(o for m in self.methods
                                        for o in hash_options(m, self.fill))) + RUN_ONLY
        values = dataclasses.asdict(self)
        key = {name: values[name] for name in names}
        fixed = self.fixed_target()
        key["target"] = self.target if fixed is None else fixed
        return key

    def config_hash(self, method: str | None = None) -> str:
        """First 16 hex digits of the SHA-256 of :meth:`result_key` (of one method's maps, or
        of the whole run)."""
        text = json.dumps(self.result_key(method), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def config_hashes(self) -> dict[str, str]:
        """Each method's config hash: the ``config_hash`` column of its rows."""
        return {m: self.config_hash(m) for m in self.methods}
