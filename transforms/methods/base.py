"""The interface every explanation method implements, and the method registry.

A method turns one normalised clip ``x`` (3, T, H, W) on the scoring device, a target class and
(for tube methods) the clip's :class:`~transforms.tubes.Tubes` into a saliency map (T, H, W).
It scores inputs only through the :class:`~transforms.scoring.Scorer`, in batches of at most
``batch_size`` clips, and may run backward passes (``scorer.target_scores(..., grad=True)``):
gradient methods (Grad-CAM, AOSA-approx, STEP, F-EP) fit the same call shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from transforms.scoring import Scorer
from transforms.tubes import Tubes


@dataclass(frozen=True)
class Explanation:
    """One saliency map and its cost.

    Attributes:
        saliency: float32 (T, H, W) on the CPU.
        forward_passes: clips forwarded through the network (the base forward excluded).
        backward_passes: clips backpropagated.
    """

    saliency: torch.Tensor
    forward_passes: int
    backward_passes: int = 0


class Method(ABC):
    """An explanation method. Subclasses set ``name`` and implement :meth:`explain`."""

    name: str = ""
    needs_tubes: bool = False

    @abstractmethod
    def explain(self, scorer: Scorer, x: torch.Tensor, target: int, tubes: Tubes | None,
                batch_size: int) -> Explanation:
        """Saliency of ``target`` for the normalised clip ``x`` (3, T, H, W) on the device."""


METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str):
    """Class decorator adding a method factory under ``name``."""

    def wrap(factory):
        METHODS[name] = factory
        return factory

    return wrap


def get_method(name: str, *args, **kwargs) -> Method:
    """A fresh method instance (arguments go to its constructor).

    Raises:
        ValueError: unknown ``name`` (the message lists the choices).
    """
    if name not in available_methods():  # also imports the built-in methods
        raise ValueError(f"unknown method {name!r}; choose from: {', '.join(sorted(METHODS))}")
    return METHODS[name](*args, **kwargs)


def available_methods() -> list[str]:
    """Names of all registered methods (importing the built-in ones first)."""
    from transforms.methods import aosa, baselines  # noqa: F401

    return sorted(METHODS)
