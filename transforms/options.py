"""One declaration per option: :class:`Option` (name, type, default, help, validation, and
where the option belongs for the config hash).

From the declarations ``pipeline`` derives the command line, the validated run configuration
(``pipeline.config.RunConfig``), each method's hash keys and the README's options table. A
method declares the options it reads next to its code and lists them in its ``reads``
(:class:`~transforms.methods.base.Method`); the run's own options (input, model, device, ...)
are declared in ``pipeline.flags``. Adding a method with an option touches one file.

This module imports nothing heavy (``run_pipeline.py --help`` reads the declarations without
importing torch).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Where an option belongs for the config hash.
COMMON = "common"  # in every method's hash: every row depends on it
EXECUTION = "execution"  # in no hash: how a run executes, never what it computes
RUN = "run"  # in the whole run's hash only (each method's rows do not depend on it)
METHOD = "method"  # in the hash of the methods that read it (``Method.reads``)
PLACES = (COMMON, EXECUTION, RUN, METHOD)

Check = Callable[[Any, Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class Option:
    """One option of a run.

    Attributes:
        name: the run configuration's field, the key in the config hash, and the attribute a
            method reads (``self.options.<name>``).
        type: parses the command-line text (``int``, ``float``, ``str``, :func:`floats`,
            :func:`int_pair`, :func:`names`); ``bool``: a switch that flips ``default``.
        default: the value when the flag is not given (None: derived by ``resolve``, or the
            method's own default).
        help: what it does, for ``--help`` and the README's options table.
        place: where it belongs for the config hash: :data:`COMMON`, :data:`EXECUTION`,
            :data:`RUN` or :data:`METHOD` (read by the methods that list it in ``reads``).
        check: given the resolved value and every resolved value by name, None when valid,
            else why not (the error reads ``<flag> <reason>``). Cross-option checks (e.g.
            ``--t-hop <= --t-window``) live with the option they constrain.
        choices: the allowed values (None passes: the default).
        resolve: the value derived from the others when ``default`` depends on them (e.g.
            scaled with ``size``), given the value and every value resolved before it.
        flag: the command-line flag; None derives ``--name-with-dashes`` (``--no-name`` for a
            switch that defaults to True); "" for a value the run computes itself.
        label: how errors and tables name the option (default: its flag).
        hash_default: False leaves the option out of the config hash while it has its default
            value: for an option added after outputs existed, whose default computes exactly
            what its absence did, so those outputs keep their hashes.
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    place: str = METHOD
    check: Check | None = None
    choices: tuple | None = None
    resolve: Callable[[Any, Mapping[str, Any]], Any] | None = None
    flag: str | None = None
    label: str = ""
    hash_default: bool = True

    def __post_init__(self) -> None:
        if self.place not in PLACES:
            raise ValueError(f"option {self.name}: place must be one of {', '.join(PLACES)}, "
                             f"got {self.place!r}")
        if self.flag is None:
            dashed = self.name.replace("_", "-")
            switch_off = self.type is bool and self.default
            object.__setattr__(self, "flag", f"--no-{dashed}" if switch_off else f"--{dashed}")
        if not self.label:
            object.__setattr__(self, "label", self.flag or self.name)

    def error(self, value: Any, values: Mapping[str, Any]) -> str | None:
        """The one-line error for ``value`` among the resolved ``values`` (None: valid)."""
        if self.choices is not None and value is not None and value not in self.choices:
            return (f"{self.label} must be one of {', '.join(map(str, self.choices))}, "
                    f"got {value!r}")
        reason = self.check(value, values) if self.check is not None else None
        return None if reason is None else f"{self.label} {reason}"


def at_least(low: float) -> Check:
    """A check: the value is >= ``low`` (None passes: a default resolved elsewhere)."""
    return lambda v, _: None if v is None or v >= low else f"must be >= {low}, got {v}"


def in_range(low: float, high: float | str, brackets: str = "[]") -> Check:
    """A check: ``low <= value <= high``; ``brackets`` "(]", "[)" or "()" open an end;
    ``high`` may name another option (e.g. ``"size"``). None passes."""

    def check(v: Any, values: Mapping[str, Any]) -> str | None:
        if v is None:
            return None
        hi = values[high] if isinstance(high, str) else high
        ok = (v > low if brackets[0] == "(" else v >= low) and (
            v < hi if brackets[1] == ")" else v <= hi)
        return None if ok else f"must be in {brackets[0]}{low}, {hi}{brackets[1]}, got {v}"

    return check


def floats(text: str) -> tuple[float, ...]:
    """``"0.05,0.1"`` → (0.05, 0.1)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from None


def _ints(text: str, count: int, expected: str) -> tuple[int, ...]:
    """``count`` comma-separated integers, or an argparse error saying what was ``expected``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return values


def int_pair(text: str) -> tuple[int, int]:
    """``"2,4"`` → (2, 4)."""
    return _ints(text, 2, "two integers, e.g. 2,4")  # type: ignore[return-value]


def int_triple(text: str) -> tuple[int, int, int]:
    """``"2,32,32"`` → (2, 32, 32)."""
    return _ints(text, 3, "three integers T,H,W, e.g. 2,32,32")  # type: ignore[return-value]


def names(text: str) -> tuple[str, ...]:
    """``"aosa, osa"`` → ("aosa", "osa")."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _restore(cls: type, values: dict[str, Any]) -> OptionValues:
    obj = object.__new__(cls)
    object.__setattr__(obj, "_values", dict(values))
    return obj


class OptionValues:
    """Frozen values of a set of declared options, read as attributes (``v.<name>``).

    Subclasses say which options they hold (:meth:`declared`); the constructor takes any of
    their names, the others keep their declared defaults.
    """

    __slots__ = ("_values",)

    @classmethod
    def declared(cls) -> dict[str, Option]:
        """The options held, by name, in declaration order."""
        raise NotImplementedError

    def __init__(self, **values: Any) -> None:
        declared = self.declared()
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option(s) {', '.join(unknown)}")
        object.__setattr__(self, "_values",
                           {n: values.get(n, o.default) for n, o in declared.items()})

    def __getattr__(self, name: str) -> Any:
        if name == "_values" or name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no option {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen (use .replace)")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values == self._values

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._values.items(), key=lambda kv: kv[0]))))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"{type(self).__name__}({body})"

    def __reduce__(self):
        return _restore, (type(self), self._values)

    def replace(self, **changes: Any) -> OptionValues:
        """A copy with ``changes``."""
        return type(self)(**{**self._values, **changes})

    def as_dict(self) -> dict[str, Any]:
        """Every value by option name."""
        return dict(self._values)
