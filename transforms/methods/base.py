"""The interface every explanation method implements, and the method registry.

A method turns one clip, bound to the scoring device in a
:class:`~transforms.perturbation.PerturbationEngine` (the clip ``engine.x`` (3, T, H, W), the
target class, the score, the batch size, the clean clip's score), and — for tube methods — the
clip's :class:`~transforms.tubes.Tubes` into a saliency map (T, H, W). It reaches the network
only through the engine, which batches forwards, offers the gradient path
(:meth:`~transforms.perturbation.PerturbationEngine.score_with_grad`) and counts every pass, so
gradient methods (Grad-CAM, AOSA-approx, STEP, F-EP) fit the same call shape.

Options that change a method's result live in one frozen :class:`MethodOptions`, built once from
the run configuration and given to every method's constructor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from transforms.perturbation import PerturbationEngine
from transforms.tubes import Tubes


@dataclass(frozen=True)
class MethodOptions:
    """Method settings (README: options).

    Attributes:
        aggregation: how AOSA turns mask scores into a map (``mean`` | ``paper``).
        fill: occlusion fill (``mean`` | ``blur`` | ``local_mean``; see
            :mod:`transforms.perturbation`), or None for each method's own default
            (``Method.default_fill``: the mean colour for exact occlusion, conditional sampling
            for AOSA-approx).
        fill_sigma: Gaussian sigma in px of the ``blur`` fill.
        fill_window: patch side in px of the ``local_mean`` fill.
        layer: network layer for layer-based methods (None: the network's default).
        approx_adjust: AOSA-approx's derivative adjustment of outlying estimates (§3.5.3);
            False gives the plain first-order estimates.
        window, hop: AOSA-T's temporal windows in frames (None: the method's defaults).
        ep_iterations, ep_areas: extremal perturbation (STEP, F-EP): optimiser iterations and
            the preserved areas (None: the method's defaults).
        fep_keep: F-EP: the low-frequency fraction of DCT coefficients kept (None: default).
    """

    aggregation: str = "mean"
    fill: str | None = None
    fill_sigma: float = 5.0
    fill_window: int = 36
    layer: str | None = None
    approx_adjust: bool = True
    window: int | None = None
    hop: int | None = None
    ep_iterations: int | None = None
    ep_areas: tuple[float, ...] | None = None
    fep_keep: float | None = None

    def fill_of(self, engine: PerturbationEngine, default: str = "mean"
                ) -> torch.Tensor | float:
        """The configured fill (``default`` when none is) for the engine's clip."""
        kind = self.fill or default
        if kind == "blur":
            return engine.fill("blur", sigma=self.fill_sigma)
        if kind == "local_mean":
            return engine.fill("local_mean", window=self.fill_window)
        return engine.fill(kind)


@dataclass(frozen=True)
class Explanation:
    """One saliency map: float32 (T, H, W) on the CPU (passes are counted by the engine)."""

    saliency: torch.Tensor


FILL_PARAMETERS: dict[str, tuple[str, ...]] = {"blur": ("fill_sigma",),
                                               "local_mean": ("fill_window",)}
"""The run options (``RunConfig`` fields) each fill reads besides ``fill`` itself."""


class Method(ABC):
    """An explanation method. Subclasses set ``name`` and implement :meth:`explain`.

    ``reads`` names the run options (``pipeline.config.RunConfig`` field names) this method's
    map depends on besides the options every method's rows depend on
    (``pipeline.config.COMMON``); its ``config_hash`` covers exactly those
    (:meth:`options_read`). ``tests/test_config_identity.py`` checks each declaration against
    the maps: an option changes the map if and only if the method declares it.
    """

    name: str = ""
    needs_tubes: bool = False
    uses_network: bool = True  # its cost includes the clean forward it shares (False: none)
    default_fill: str = "mean"  # the fill used when --fill is not given
    reads: tuple[str, ...] = ()

    @classmethod
    def options_read(cls, fill: str | None) -> tuple[str, ...]:
        """``reads``, plus the parameter of the fill in use (``fill``, else ``default_fill``)
        when the method reads ``fill``."""
        if "fill" not in cls.reads:
            return cls.reads
        return cls.reads + FILL_PARAMETERS.get(fill or cls.default_fill, ())

    def __init__(self, options: MethodOptions | None = None) -> None:
        self.options = options or MethodOptions()

    def fill(self, engine: PerturbationEngine) -> torch.Tensor | float:
        """This method's fill for the engine's clip (``--fill``, else ``default_fill``)."""
        return self.options.fill_of(engine, self.default_fill)

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


def get_method(name: str, options: MethodOptions | None = None) -> Method:
    """A fresh method instance.

    Raises:
        ValueError: unknown ``name`` (the message lists the choices).
    """
    if name not in available_methods():  # also imports the built-in methods
        raise ValueError(f"unknown method {name!r}; choose from: {', '.join(sorted(METHODS))}")
    return METHODS[name](options)


def available_methods() -> list[str]:
    """Names of all registered methods (importing the built-in ones first)."""
    from transforms.methods import (  # noqa: F401
        aosa,
        aosa_approx,
        aosa_t,
        baselines,
        extremal,
        gradcam,
        osa,
    )

    return sorted(METHODS)
