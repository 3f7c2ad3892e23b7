"""Frozen run configuration, validated once in the driver, and its hash.

Every option is declared once (:class:`~transforms.options.Option`): the run's own in
:mod:`pipeline.flags`, the methods' next to their code (``Method.reads``).
:func:`declared_options` joins them; :class:`RunConfig` holds one value of each.

Every value that changes a result is part of :meth:`RunConfig.result_key`, whose hash is
written next to every output row: rows with equal hashes were computed the same way. The
weights enter by content (their SHA-256, from the model handler), never by file name. Each
option's ``place`` says which hashes it enters: every method's (``common``), none
(``execution``), the whole run's (``run``), or the hashes of the methods that read it
(``method``; :func:`hash_options`).
"""

from __future__ import annotations

import hashlib
import json
import os

from models.registry import ModelSpec
from pipeline.flags import JOB_OPTIONS
from transforms.explain import ExplainSettings
from transforms.methods.base import (
    FILL_PARAMETERS,
    METHODS,
    MethodOptions,
    available_methods,
    method_declarations,
    score_of,
)
from transforms.model_handler import ModelConfig, VideoModelHandler
from transforms.options import COMMON, EXECUTION, METHOD, RUN, Option, OptionValues
from transforms.sink import StoreOptions

TARGET_KEYWORDS = ("predicted", "label")


def declared_options() -> dict[str, Option]:
    """Every option by name: the run's own, then those the registered methods read.

    Raises:
        ValueError: a method declares an option under a name the run's options use.
    """
    found = {o.name: o for o in JOB_OPTIONS}
    for name, option in method_declarations().items():
        if found.setdefault(name, option) is not option:
            raise ValueError(f"option {name!r} is declared twice (by the run and a method)")
    return found


def placed(place: str) -> tuple[str, ...]:
    """The names of the options of one ``place`` (e.g. ``common``), in declaration order."""
    return tuple(n for n, o in declared_options().items() if o.place == place)


def hash_options(method: str, fill: str | None = None) -> tuple[str, ...]:
    """The options in ``method``'s ``config_hash``: the common ones and what it declares it
    reads with ``--fill`` = ``fill`` (:meth:`~transforms.methods.base.Method.options_read`);
    a registered factory that declares nothing gets every method option (never reused wrongly).

    Raises:
        ValueError: unknown method.
    """
    if method not in available_methods():
        raise ValueError(f"unknown method {method!r}; choose from "
                         f"{', '.join(available_methods())}")
    declared = getattr(METHODS[method], "options_read", None)
    return placed(COMMON) + (method_options() if declared is None else tuple(declared(fill)))


def method_options() -> tuple[str, ...]:
    """Every option some method reads (sorted)."""
    return tuple(sorted(placed(METHOD)))


def _names(fields) -> str:
    options = declared_options()
    return ", ".join(f"`{options[n].label}`" if options[n].flag else options[n].label
                     for n in fields) or "none"


def identity_table() -> str:
    """The user guide's account (docs/USER_GUIDE.md) of what enters each method's
    ``config_hash`` (markdown), generated from the declarations."""
    lines = [f"Common to every method: {_names(placed(COMMON))}.", "",
             "| method | options in its `config_hash` besides the common ones | fill parameter |",
             "| --- | --- | --- |"]
    options = declared_options()
    for m in available_methods():
        cls = METHODS[m]
        fills = (*FILL_PARAMETERS, None)
        reads = tuple(o.name for o in cls.reads)
        params = dict.fromkeys(p for k in fills for p in cls.options_read(k) if p not in reads)
        when = ["{} with {}".format(f"`{options[p].label}`", " or ".join(
            f"`--fill {k}`" if k else "no `--fill`" for k in fills if p in cls.options_read(k)))
            for p in params]
        lines.append(f"| `{m}` | {_names(reads)} | {'; '.join(when) or '-'} |")
    return "\n".join(lines)


def _readers(name: str) -> str:
    """The methods whose hash holds option ``name``, with the ``--fill`` that makes them read
    it when only some do."""
    fills = (None, *FILL_PARAMETERS)
    groups: dict[tuple, list[str]] = {}
    for m in available_methods():
        when = tuple(k for k in fills if name in METHODS[m].options_read(k))
        if when:
            groups.setdefault(when if len(when) < len(fills) else (), []).append(f"`{m}`")
    parts = [", ".join(ms) + (" with " + " or ".join(
        f"`--fill {k}`" if k else "no `--fill`" for k in when) if when else "")
        for when, ms in groups.items()]
    return "; ".join(parts) or "none"


def _default(option: Option) -> str:
    if option.type is bool:
        return "off"
    if option.default is None:
        return "-"
    value = option.default
    return f"`{','.join(map(str, value)) if isinstance(value, tuple) else value}`"


def options_table() -> str:
    """The README's options table (markdown): every flag, its default, what it does, and
    which config hashes it enters, generated from the declarations."""
    where = {COMMON: "every method", RUN: "the whole run's only", EXECUTION: "none"}
    lines = ["| option | default | what it does | in the `config_hash` of |",
             "| --- | --- | --- | --- |"]
    for o in declared_options().values():
        if o.flag:
            help_text = o.help.replace("|", "\\|")
            lines.append(f"| `{o.flag}` | {_default(o)} | {help_text} | "
                         f"{where.get(o.place) or _readers(o.name)} |")
    return "\n".join(lines)


class RunConfig(OptionValues):
    """One value of every declared option (:func:`declared_options`), read as attributes;
    ``RunConfig(**values)`` takes any option by name, the others keep their defaults.
    :meth:`resolve` fills the defaults derived from the model and the other options, and
    validates."""

    __slots__ = ()

    @classmethod
    def declared(cls) -> dict[str, Option]:
        return declared_options()

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
        values = self.as_dict()
        if values["size"] is None:
            values["size"] = spec.input_size
        if values["num_frames"] is None:
            values["num_frames"] = spec.num_frames
        declared = self.declared()
        for name, option in declared.items():
            if option.resolve is not None:
                values[name] = option.resolve(values[name], values)
        for name, option in declared.items():
            message = option.error(values[name], values)
            if message is not None:
                raise ValueError(message)
        cfg = RunConfig(**values)
        cfg._check_model(spec)
        return cfg

    def _check_model(self, spec: ModelSpec) -> None:
        """What the network accepts (raises ValueError), and the class explained."""
        low = max(2, spec.min_frames)
        if self.num_frames < low:
            raise ValueError(f"--num-frames must be >= {low} for {spec.name}, "
                             f"got {self.num_frames}")
        if spec.fixed_input and (self.num_frames, self.size) != (spec.num_frames,
                                                                 spec.input_size):
            raise ValueError(f"{spec.name} only accepts {spec.num_frames} frames of "
                             f"{spec.input_size} px, got --num-frames {self.num_frames} "
                             f"--size {self.size}")
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
        """The values of the options the methods read."""
        return MethodOptions(**{n: getattr(self, n) for n in MethodOptions.declared()})

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
            metrics=self.metrics, metric_steps=self.metric_steps,
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
                                        for o in hash_options(m, self.fill))) + placed(RUN)
        values, options = self.as_dict(), declared_options()
        if method is not None:  # the score it measures (its own when --score is not given)
            values["score"] = score_of(method, values["score"])
        key = {name: values[name] for name in names
               if options[name].hash_default or values[name] != options[name].default}
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
