"""The interface every explanation method implements, and the method registry.

A method turns one clip, bound to the scoring device in a
:class:`~transforms.perturbation.PerturbationEngine` (the clip ``engine.x`` (3, T, H, W), the
target class, the score, the batch size, the clean clip's score), and — for tube methods — the
clip's :class:`~transforms.tubes.Tubes` into a saliency map (T, H, W). It reaches the network
only through the engine, which batches forwards, offers the gradient path
(:meth:`~transforms.perturbation.PerturbationEngine.score_with_grad`) and counts every pass, so
gradient methods (Grad-CAM, AOSA-approx, STEP, F-EP) fit the same call shape.

A method declares the options it reads (:class:`~transforms.options.Option`) next to its code
and lists them in ``reads``; it reads their values as ``self.options.<name>``
(:class:`MethodOptions`, built once from the run configuration).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from transforms.options import Option, OptionValues, in_range
from transforms.perturbation import FILLS, SCORES, PerturbationEngine
from transforms.tubes import Tubes

FILL = Option("fill", str, None, choices=FILLS, help=(
    "occlusion fill for every method: mean (dataset-mean colour) | blur | local_mean (mean of "
    "a patch around each voxel, conditional sampling); default: each method's own (mean; "
    "AOSA-approx: local_mean)"))
FILL_SIGMA = Option(
    "fill_sigma", float, None, "blur fill: Gaussian sigma in px (default: 5 px at 112 px, scaled)",
    check=lambda v, _: None if v > 0 else f"must be > 0, got {v}",
    resolve=lambda v, c: 5.0 * c["size"] / 112 if v is None else v)
FILL_WINDOW = Option(
    "fill_window", int, None,
    "local_mean fill: patch side in px (default: 36 px at 112 px, scaled)",
    check=in_range(1, "size"),
    resolve=lambda v, c: max(1, round(36 * c["size"] / 112)) if v is None else v)
SCORE = Option("score", str, None, choices=SCORES,
               help="what methods measure: prob (softmax probability of the target, the "
                    "paper's f) | logit; default: each method's own (prob; AOSA-T: logit, "
                    "docs/CLAIMS.md)")

FILL_PARAMETERS: dict[str, tuple[Option, ...]] = {"blur": (FILL_SIGMA,),
                                                  "local_mean": (FILL_WINDOW,)}
"""The options each fill reads besides ``--fill`` itself."""


def method_declarations() -> dict[str, Option]:
    """Every option some registered method reads (with the fill parameters when one reads
    ``--fill``), by name, in the methods' order.

    Raises:
        ValueError: two different declarations share a name.
    """
    found: dict[str, Option] = {}
    for m in available_methods():
        for o in getattr(METHODS[m], "reads", ()):
            extra = FILL_PARAMETERS.values() if o is FILL else ()
            for option in (o, *(p for params in extra for p in params)):
                if found.setdefault(option.name, option) is not option:
                    raise ValueError(f"option {option.name!r} is declared twice (method {m})")
    return found


class MethodOptions(OptionValues):
    """Every method option's value (``self.options.<name>`` in a method); those not given keep
    their declared defaults (see each method's ``reads``)."""

    __slots__ = ()

    @classmethod
    def declared(cls) -> dict[str, Option]:
        return method_declarations()

    def fill_of(self, engine: PerturbationEngine, default: str = "mean"
                ) -> torch.Tensor | float:
        """The configured fill (``default`` when none is) for the engine's clip; the fill
        parameters default to their run defaults scaled to the clip's height."""
        kind = self.fill or default
        size = {"size": engine.frame_shape[1]}
        if kind == "blur":
            return engine.fill("blur", sigma=FILL_SIGMA.resolve(self.fill_sigma, size))
        if kind == "local_mean":
            return engine.fill("local_mean", window=FILL_WINDOW.resolve(self.fill_window, size))
        return engine.fill(kind)


@dataclass(frozen=True)
class Explanation:
    """One saliency map: float32 (T, H, W) on the CPU (passes are counted by the engine), and
    ``warnings``: one line each about a map the method returns but did not compute as it
    promises (e.g. an optimisation that stopped short of its constraint); the pipeline logs
    them with the clip and counts them (``method_warnings``)."""

    saliency: torch.Tensor
    warnings: tuple[str, ...] = ()


class Method(ABC):
    """An explanation method. Subclasses set ``name`` and implement :meth:`explain`.

    ``reads`` lists the options (:class:`~transforms.options.Option`, declared next to the
    code that reads them) this method's map depends on besides the options every method's rows
    depend on (``place=COMMON``); its ``config_hash`` covers exactly those
    (:meth:`options_read`). ``tests/test_config_identity.py`` checks each declaration against
    the maps: an option changes the map if and only if the method declares it.
    """

    name: str = ""
    needs_tubes: bool = False
    uses_network: bool = True  # its cost includes the clean forward it shares (False: none)
    default_fill: str = "mean"  # the fill used when --fill is not given
    default_score: str = "prob"  # the score used when --score is not given
    reads: tuple[Option, ...] = ()

    @classmethod
    def options_read(cls, fill: str | None) -> tuple[str, ...]:
        """The names of ``reads``, plus the parameter of the fill in use (``fill``, else
        ``default_fill``) when the method reads ``--fill``."""
        read = tuple(o.name for o in cls.reads)
        if FILL not in cls.reads:
            return read
        return read + tuple(p.name for p in FILL_PARAMETERS.get(fill or cls.default_fill, ()))

    def __init__(self, options: MethodOptions | None = None) -> None:
        self.options = options or MethodOptions()

    @classmethod
    def score_read(cls, score: str | None) -> str:
        """The score this method measures when the run's ``--score`` is ``score``: that
        score when the method reads ``--score`` and one is given, else ``default_score``."""
        return score if score is not None and SCORE in cls.reads else cls.default_score

    def fill(self, engine: PerturbationEngine) -> torch.Tensor | float:
        """This method's fill for the engine's clip (``--fill``, else ``default_fill``)."""
        return self.options.fill_of(engine, self.default_fill)

    without_layer: str | None = None  # how to run it on a network without one (a flag)

    def needs_layer(self) -> bool:
        """Whether, with these options, the method reads a hidden layer of the network
        (``--layer`` or the network's Grad-CAM layer): the run checks the network has one
        before it starts (and names ``without_layer`` when it has not)."""
        return False

    @abstractmethod
    def explain(self, engine: PerturbationEngine, tubes: Tubes | None) -> Explanation:
        """Saliency of ``engine.target`` for the clip ``engine.x``."""


METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str):
    """Class decorator adding a method factory under ``name``."""

    def wrap(factory):
        METHODS[name] = factory
        return factory

    return wrap


def score_of(method: str | object, score: str | None) -> str | None:
    """The score ``method`` (a registered name or a method instance) measures under the run's
    ``--score`` (:meth:`Method.score_read`; a factory that declares nothing keeps the run's
    value)."""
    factory = METHODS[method] if isinstance(method, str) else type(method)
    read = getattr(factory, "score_read", None)
    return score if read is None else read(score)


def get_method(name: str, options: MethodOptions | None = None) -> Method:
    """A fresh method instance.

    Raises:
        ValueError: unknown ``name`` (the message lists the choices).
    """
    if name not in available_methods():  # also imports the built-in methods
        raise ValueError(f"unknown method {name!r}; choose from: {', '.join(sorted(METHODS))}")
    return METHODS[name](options)


def available_methods() -> list[str]:
    """Names of all registered methods (importing every module of this package first, so a
    new method is one file: its module registers it)."""
    import importlib
    import pkgutil

    import transforms.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return sorted(METHODS)
