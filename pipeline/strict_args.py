"""Refuse unknown or misspelled command-line flags instead of letting Beam drop them.

Beam parses ``argv`` piecemeal: every ``PipelineOptions`` view parses only its own flags, and
:meth:`PipelineOptions.get_all_options` merely logs ``Discarding unparseable args`` (or, with
``retain_unknown_options=True`` as ``Pipeline.run`` and the Prism/Dataflow runners use it,
forwards them as strings). A typo such as ``--strdie 4`` therefore silently runs with the
default stride. :func:`check_known_args` collects the flags of every options class through
the hook Beam itself calls (``_add_argparse_args``, handed a recorder instead of Beam's private
parser), parses ``argv`` with their names only and turns every leftover into an
:class:`UnknownOptionError`.

The check knows the flags of every ``PipelineOptions`` subclass imported *at call time*, so
import the modules that define the application's options (e.g. ``pipeline.options``) first.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import re
from collections.abc import Iterable, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

log = logging.getLogger(__name__)

# Runner (lower-case class name) → module that defines PipelineOptions subclasses beyond
# apache_beam.options.pipeline_options. In Beam 2.77 the Flink, Spark, Prism, KafkaStreams,
# Portable, JobServer, Direct and Dataflow (GoogleCloud) options all live in pipeline_options
# itself, so the runners Beam resolves by short name need nothing extra. Only these two
# modules add options; Beam resolves them by their dotted path only (which is imported
# anyway), the short names are listed for the error message's sake.
_RUNNER_OPTION_MODULES = {
    "renderrunner": "apache_beam.runners.render",  # RenderOptions
    "daskrunner": "apache_beam.runners.dask.dask_runner",  # DaskOptions (needs dask)
}


class UnknownOptionError(ValueError):
    """The command line holds a flag no ``PipelineOptions`` class defines, or a stray value.

    Also raised, with argparse's message, when the command line cannot be split into flags
    and values at all (e.g. a flag that needs a value comes last).
    """


class _ParseError(Exception):
    """argparse gave up; carries its one-line message."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise ``_ParseError``; like Beam's parser, ignore ``ambiguous option``."""
        if message.startswith("ambiguous option: "):
            return
        raise _ParseError(message)


def _subclasses(cls: type) -> list[type]:
    """Every subclass of ``cls``, recursively, in definition order, without duplicates."""
    seen: dict[type, None] = {}
    stack = list(reversed(cls.__subclasses__()))
    while stack:
        sub = stack.pop()
        if sub not in seen:
            seen[sub] = None
            stack.extend(reversed(sub.__subclasses__()))
    return list(seen)


def _runner_name(argv: Sequence[str]) -> str | None:
    """The value of ``--runner`` in ``argv`` (last one wins), or None."""
    parser = _Parser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runner")
    try:
        known, _ = parser.parse_known_args(list(argv))
    except _ParseError:
        return None
    return known.runner


def _import_runner_options(runner: str | None) -> None:
    """Import the module that defines the options of ``runner``, if there is one.

    Like ``apache_beam.runners.runner.create_runner``: a dotted name imports its module (a
    custom runner may define options there); a short name is looked up case-insensitively,
    with or without the ``Runner`` suffix. Import failures are left for Beam to report.
    """
    if not runner:
        return
    modules = []
    if "." in runner:
        modules.append(runner.rsplit(".", 1)[0])
    short = runner.rsplit(".", 1)[-1].lower()
    for key in (short, short + "runner"):
        if key in _RUNNER_OPTION_MODULES:
            modules.append(_RUNNER_OPTION_MODULES[key])
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - e.g. dask missing; Beam will say so itself
            log.debug("cannot import %s for --runner=%s: %s", module, runner, exc)


# argparse actions that take no value (Beam's options use these and their own Action classes).
_NO_VALUE = {"store_true", "store_false", "store_const", "append_const", "count", "help",
             "version"}


class _Recorder:
    """Stands in for Beam's parser and records each flag an options class declares, with its
    arity (``add_argument`` and Beam's ``add_value_provider_argument`` share the signature):
    no argparse or Beam internals are read."""

    def __init__(self) -> None:
        self.flags: dict[tuple[str, ...], int | str | None] = {}

    def add_argument(self, *names: str, **kwargs) -> None:
        action = kwargs.get("action")
        if action is argparse.BooleanOptionalAction:
            names += tuple("--no-" + n[2:] for n in names if n.startswith("--"))
            nargs = 0
        elif isinstance(action, str) and action in _NO_VALUE:
            nargs = 0
        else:
            nargs = kwargs.get("nargs")
        self.flags[names] = nargs  # a flag defined twice: the later definition wins

    add_value_provider_argument = add_argument

    def add_argument_group(self, *args, **kwargs) -> _Recorder:
        return self

    add_mutually_exclusive_group = add_argument_group


def _beam_flags() -> dict[tuple[str, ...], int | str | None]:
    """All flags (with their arity) of every imported ``PipelineOptions`` subclass, as
    ``get_all_options`` collects them.

    Unlike Beam, subclasses of subclasses count too (``view_as`` honours them), and a flag
    defined twice replaces the earlier definition instead of raising.
    """
    recorder = _Recorder()
    for cls in _subclasses(PipelineOptions):
        if "_add_argparse_args" in cls.__dict__:
            cls._add_argparse_args(recorder)  # Beam's hook for declaring options
    return recorder.flags


def _names_parser(flags: dict[tuple[str, ...], int | str | None],
                  extra_flags: Iterable[str]) -> _Parser:
    """A parser with the flag names and arities only.

    No types, choices, required flags or custom actions: the check is about names, so a bad
    value, a missing ``--input`` or ``--help`` is left for the real parse.
    """
    parser = _Parser(add_help=False, allow_abbrev=False, conflict_handler="resolve")
    for names, nargs in flags.items():
        if not names[0].startswith("-"):  # a positional ValueProvider argument
            parser.add_argument(names[0], nargs=nargs)
        elif nargs == 0:
            parser.add_argument(*names, action="store_const", const=True, default=None)
        else:
            parser.add_argument(*names, nargs=nargs)
    for flag in extra_flags:
        parser.add_argument(flag, nargs="?")
    return parser


def _looks_like_flag(arg: str) -> bool:
    """Whether ``arg`` reads as a flag: a dash, not a negative number, no space in the name."""
    return (len(arg) > 1 and arg.startswith("-") and " " not in arg.split("=", 1)[0]
            and re.fullmatch(r"-\d+$|-\d*\.\d+", arg) is None)


def _suggestion(flag: str, known: Iterable[str]) -> str | None:
    """The known flag closest to ``flag``, compared without the leading dashes, or None."""
    by_name = {k.lstrip("-"): k for k in known if k.startswith("--")}
    close = difflib.get_close_matches(flag.lstrip("-"), list(by_name), n=1)
    return by_name[close[0]] if close else None


def check_known_args(argv: Sequence[str], *, extra_flags: Iterable[str] = ()) -> None:
    """Raise unless every flag in ``argv`` is defined by an imported ``PipelineOptions`` class.

    Flags are matched exactly as Beam's parser matches them: ``--a-b`` and ``--a_b`` only as
    registered, ``--flag value`` and ``--flag=value``, no abbreviations (Beam parses with
    ``allow_abbrev=False``). Values, including ones that start with a dash, are never taken
    for flags when argparse would not take them for flags. If ``--runner`` names a runner
    whose options live in a module of their own, that module is imported first.

    Args:
        argv: The command line without the program name.
        extra_flags: Further flags to accept, each with an optional value (e.g. options a
            portable job server describes at submission time, which no Python class defines).

    Raises:
        UnknownOptionError: For the first unknown flag (``unknown option --strdie (did you
            mean --stride?)``, the suggestion omitted when nothing is close), the first
            leftover positional (``unexpected argument X``), or argv argparse cannot split.
    """
    argv, extra_flags = list(argv), list(extra_flags)
    _import_runner_options(_runner_name(argv))
    flags = _beam_flags()
    parser = _names_parser(flags, extra_flags)
    try:
        _, leftovers = parser.parse_known_args(argv)
    except _ParseError as exc:
        raise UnknownOptionError(str(exc)) from None
    if leftovers[:1] == ["--"]:  # argparse keeps the end-of-flags marker; Beam ignores it
        leftovers = leftovers[1:]
    if not leftovers:
        return
    arg = leftovers[0]
    if _looks_like_flag(arg):
        flag = arg.split("=", 1)[0]
        known = [n for names in flags for n in names] + list(extra_flags)
        hint = _suggestion(flag, known)
        raise UnknownOptionError(
            f"unknown option {flag}" + (f" (did you mean {hint}?)" if hint else ""))
    raise UnknownOptionError(f"unexpected argument {arg}")
