"""Bring your own network: a ``"package.module:callable"`` that returns an ``nn.Module``.

The callable (a function, a class, or a dotted attribute such as ``mod:Class.build``) is
imported by name, so the same spec can be rebuilt in another process from the string alone;
the :class:`ModelSpec` made here holds only picklable parts (``functools.partial`` of
module-level functions), never a closure.

The network must map a float clip (B, 3, T, H, W), normalised with the given mean/std, to
logits (B, num_classes).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from models.registry import ModelSpec

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def is_factory(name: str) -> bool:
    """True when ``name`` is a ``"module:attr"`` factory rather than a registry name."""
    return ":" in name


def load_factory(target: str) -> Callable[..., nn.Module]:
    """Import the callable named by ``target``.

    Args:
        target: ``"package.module:attr"``; ``attr`` may be dotted (``"mod:Class.build"``).

    Returns:
        the callable (not called).

    Raises:
        ValueError: one line saying why: malformed target, module not importable (with the
            import error), attribute missing, or not callable.
    """
    module_name, attrs = _split_target(target)
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises while importing
        raise ValueError(f"model factory {target!r}: cannot import module {module_name!r}: "
                         f"{type(exc).__name__}: {_one_line(exc)}") from exc
    for i, attr in enumerate(attrs):
        if not hasattr(obj, attr):
            where = ".".join([module_name, *attrs[:i]])
            raise ValueError(f"model factory {target!r}: {where} has no attribute {attr!r}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise ValueError(f"model factory {target!r} is a {type(obj).__name__}, not callable")
    return obj


def factory_spec(
    target: str,
    *,
    num_frames: int,
    size: int,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    layer: str | None = None,
    resize_ratio: float = 1.0,
    min_frames: int = 1,
) -> ModelSpec:
    """A :class:`ModelSpec` for the user network ``target`` (see :func:`load_factory`).

    ``spec.build(n)`` calls the factory with ``num_classes=n`` when its signature has a
    ``num_classes`` parameter (a bare ``**kwargs`` does not count), without arguments otherwise,
    and checks that it returns an ``nn.Module``. The network is built once here to validate it.
    When ``num_classes`` is None, or when the factory cannot be told the class count, one dry
    forward on zeros (1, 3, num_frames, size, size) under ``torch.no_grad`` reads the number of
    classes from the (1, C) output.

    Args:
        target: ``"package.module:attr"``.
        num_frames: clip length T fed to the network.
        size: square crop H = W fed to the network, in pixels.
        mean: per-channel RGB mean on the [0, 1] scale.
        std: per-channel RGB standard deviation on the [0, 1] scale.
        num_classes: number of output classes; inferred when None.
        class_names: names of the classes, in logit order (length ``num_classes``).
        layer: dotted module path for Grad-CAM; must exist in the network.
        resize_ratio: short side resized to ``round(size * resize_ratio)`` before the crop.
        min_frames: smallest clip length the network accepts.

    Returns:
        the spec, named ``target``; use it with :func:`models.registry.build_network`.

    Raises:
        ValueError: the factory cannot be loaded, does not return an ``nn.Module``, its output
            is not (1, C), C contradicts ``num_classes``, ``class_names`` has the wrong length,
            ``layer`` does not exist, or an argument is out of range.
    """
    _check_args(target, num_frames, size, mean, std, min_frames)
    accepts = _accepts_num_classes(load_factory(target))
    model = _call_factory(target, accepts, num_classes if accepts else None)
    if num_classes is None or not accepts:
        found = _infer_num_classes(model, target, num_frames, size)
        if num_classes is not None and found != num_classes:
            raise ValueError(f"model factory {target!r} takes no num_classes parameter and its "
                             f"network outputs {found} classes, not num_classes={num_classes}")
        num_classes = found
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"model factory {target!r}: {len(class_names)} class names for "
                         f"{num_classes} classes")
    if layer is not None:
        _check_layer(model, layer, target)
    return ModelSpec(
        name=target,
        build=partial(_call_factory, target, accepts),
        num_classes=num_classes,
        input_size=size,
        num_frames=num_frames,
        mean=_triple(mean),
        std=_triple(std),
        resize_ratio=resize_ratio,
        class_names=None if class_names is None else partial(list, tuple(class_names)),
        gradcam_layer=layer,
        min_frames=min_frames,
        description=f"user network {target}",
        weights_note="the factory's own, or --checkpoint",
    )


def _split_target(target: str) -> tuple[str, list[str]]:
    """``"pkg.mod:A.b"`` -> ``("pkg.mod", ["A", "b"])``; ValueError when malformed."""
    module_name, sep, attr = target.partition(":")
    attrs = attr.split(".")
    if not sep or not module_name.strip() or not all(a.strip() for a in attrs):
        raise ValueError(f"model factory {target!r} must look like 'package.module:callable' "
                         "(a module path, one colon, an attribute path)")
    return module_name.strip(), [a.strip() for a in attrs]


def _accepts_num_classes(fn: Callable[..., object]) -> bool:
    """Whether ``fn`` has a parameter named ``num_classes`` that can be passed by keyword."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    param = params.get("num_classes")
    return param is not None and param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                inspect.Parameter.KEYWORD_ONLY)


def _call_factory(target: str, accepts: bool, num_classes: int | None) -> nn.Module:
    """Call the factory (with ``num_classes`` when it takes one and it is given)."""
    fn = load_factory(target)
    kwargs = {"num_classes": num_classes} if accepts and num_classes is not None else {}
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise ValueError(f"model factory {target!r} failed: {type(exc).__name__}: "
                         f"{_one_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"model factory {target!r} returned a {type(model).__name__}, "
                         "not a torch.nn.Module")
    return model


def _infer_num_classes(model: nn.Module, target: str, num_frames: int, size: int) -> int:
    """C from one forward of zeros (1, 3, num_frames, size, size) -> logits (1, C)."""
    shape = (1, 3, num_frames, size, size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except Exception as exc:
        raise ValueError(f"model factory {target!r}: a dry forward on zeros {shape} failed: "
                         f"{type(exc).__name__}: {_one_line(exc)}") from exc
    finally:
        model.train(was_training)
    if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != 1 or out.shape[1] < 1:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"model factory {target!r}: the network must return logits (1, C) "
                         f"for input {shape}, got {got}")
    return int(out.shape[1])


def _check_layer(model: nn.Module, layer: str, target: str) -> None:
    """ValueError naming ``layer`` and some real module names when it is not in ``model``."""
    try:
        model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(layer, names, n=3)
        top = [n for n, _ in model.named_children()][:8]
        hint = f"did you mean {close}? " if close else ""
        raise ValueError(f"layer {layer!r} is not a module of {target!r}; {hint}"
                         f"top-level modules: {top}") from None


def _check_args(target: str, num_frames: int, size: int, mean: Sequence[float],
                std: Sequence[float], min_frames: int) -> None:
    if num_frames < 1 or size < 1 or not 1 <= min_frames <= num_frames:
        raise ValueError(f"model factory {target!r}: need num_frames >= min_frames >= 1 and "
                         f"size >= 1, got {num_frames=}, {min_frames=}, {size=}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"model factory {target!r}: mean and std need 3 values (std > 0), "
                         f"got {tuple(mean)}, {tuple(std)}")


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
