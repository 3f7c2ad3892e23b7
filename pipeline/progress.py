"""Driver side of the local progress line: clips done / total, seconds per clip, ETA.

Workers append one ``status`` line per finished clip to ``<directory>/*.log``
(``transforms.progress.RecordProgress``); :class:`ProgressMonitor` counts them from a daemon
thread and prints ``vidxai:  30%|███       | 3/10 clips [00:36<01:26, 12.30s/clip, 1
dead-lettered, 0 skipped]`` to stderr. tqdm formats the line (bar, rate, ETA) and rewrites it
on a terminal; the counting and when to print are ours. Use a fresh directory per run: every
line in it counts.
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)

PREFIX = "vidxai"
# statuses shown in the parenthesis even when zero, with their display names
_ALWAYS_SHOWN = {"failed": "dead-lettered", "skipped": "skipped"}
_DONE = "written"  # the plain success status: counted, not itemised


def count_progress(directory: str) -> collections.Counter:
    """Count the status lines of every ``*.log`` file in ``directory``.

    A last line without its newline (a write in flight) is ignored; a missing directory or a
    file that vanishes while being read counts as empty.

    Args:
        directory: The progress directory.

    Returns:
        A ``Counter`` status → number of ticks.
    """
    counts: collections.Counter = collections.Counter()
    for path in glob.glob(os.path.join(glob.escape(directory), "*.log")):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.decode("utf-8", errors="replace").splitlines():
            if line:
                counts[line] += 1
    return counts


# tqdm's fields; always seconds per clip (a clip takes seconds), never clips per second
_WITH_TOTAL = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} clips "
               "[{elapsed}<{remaining}, {rate_inv_fmt}{postfix}]")
_NO_TOTAL = "{desc}: {n_fmt} clips [{elapsed}, {rate_inv_fmt}{postfix}]"


def format_progress(counts: Mapping[str, int], total: int | None, elapsed: float,
                    width: int | None = None) -> str:
    """One progress line, by ``tqdm.format_meter``, e.g. ``vidxai:  30%|███       | 3/10 clips
    [00:36<01:26, 12.30s/clip, 1 dead-lettered, 0 skipped]``.

    Every status counts as done; ``failed`` shows as dead-lettered, ``skipped`` as skipped
    (both even when zero), other statuses but ``written`` under their own names. Seconds per
    clip = elapsed / done, the remaining time = (total - done) × seconds per clip (``?`` while
    nothing is done). Without a total, or with more done than the total, no bar and no ETA.

    Args:
        counts: Status → ticks, as from :func:`count_progress`.
        total: Clips expected, or None when unknown.
        elapsed: Seconds since the run started.
        width: Characters the line may take (the bar fills them), or None for a 10-character
            bar.

    Returns:
        The line, without a newline.
    """
    done = sum(n for n in counts.values() if n > 0)
    parts = [f"{counts.get(k, 0)} {name}" for k, name in _ALWAYS_SHOWN.items()]
    parts += [f"{n} {k}" for k, n in sorted(counts.items())
              if k not in _ALWAYS_SHOWN and k != _DONE and n > 0]
    known = total is not None and done <= total
    return tqdm.format_meter(done, total if known else None, elapsed, ncols=width,
                             prefix=PREFIX, unit="clip", postfix=", ".join(parts),
                             bar_format=_WITH_TOTAL if known else _NO_TOTAL)


def _columns(stream: TextIO) -> int:
    """Width of the terminal ``stream`` writes to (else of stdout's, or 80)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns


class ProgressMonitor:
    """``with ProgressMonitor(directory, total):`` prints a progress line while the body runs.

    A daemon thread counts ``directory`` every ``interval`` seconds and prints a line when
    the counts changed (the first look always prints), and at least every ``heartbeat``
    seconds even when they did not (a slow clip must not look like a hang): a new line each
    time, or on a terminal the same line rewritten with ``\\r``. At exit it always prints one
    final line. It never raises into the caller (errors are logged) and stops at once at exit.
    """

    def __init__(self, directory: str, total: int | None = None, stream: TextIO | None = None,
                 interval: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 heartbeat: float = 30.0, min_gap: float = 10.0) -> None:
        """Set the monitor up; nothing runs before ``__enter__``.

        Args:
            directory: The progress directory the workers record into.
            total: Clips expected, or None when unknown.
            stream: Where lines go; None means ``sys.stderr`` at ``__enter__`` time.
            interval: Seconds between two looks at the directory.
            clock: Monotonic seconds (a parameter for tests).
            heartbeat: Longest silence in seconds while the run works.
            min_gap: Shortest time between two lines when the stream is not a terminal.
        """
        self.directory = directory
        self.total = total
        self.interval = interval
        self.counts: collections.Counter = collections.Counter()
        self._stream = stream
        self._clock = clock
        self._start = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._tty = False
        self._draw: Callable[[str], None] | None = None  # rewrites the terminal line
        self._shown: collections.Counter | None = None
        self._closed = False
        self.heartbeat = heartbeat
        self.min_gap = min_gap
        self._last_print = 0.0

    def __enter__(self) -> ProgressMonitor:
        """Start the clock and the polling thread."""
        try:
            if self._stream is None:
                self._stream = sys.stderr
            self._start = self._clock()
            isatty = getattr(self._stream, "isatty", None)
            self._tty = bool(isatty()) if callable(isatty) else False
            if self._tty:
                self._draw = tqdm.status_printer(self._stream)
            self._thread = threading.Thread(target=self._run, name="vidxai-progress",
                                            daemon=True)
            self._thread.start()
        except Exception:  # noqa: BLE001 - progress must never break the run
            log.debug("progress monitor did not start", exc_info=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the thread and print the final line; the body's exception propagates."""
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join(timeout=max(1.0, self.interval))
            self._show(final=True)
        except Exception:  # noqa: BLE001 - progress must never break the run
            log.debug("progress monitor failed at exit", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._show(final=False)
            except Exception:  # noqa: BLE001 - e.g. a closed stream; try again next time
                log.debug("progress update failed", exc_info=True)

    def _show(self, final: bool) -> None:
        counts = count_progress(self.directory)
        with self._lock:
            now = self._clock()
            since = now - self._last_print
            unchanged = counts == self._shown and since < self.heartbeat
            # A log (not a terminal) gets at most one line per ``min_gap`` seconds.
            crowded = (not self._tty and self._shown is not None and since < self.min_gap)
            if self._closed or (not final and (unchanged or crowded)):
                return
            self._last_print = now
            self.counts = counts
            stream = self._stream
            if stream is None:
                return
            if self._draw is not None:  # a terminal: the line rewritten in place, fitted to it
                width = _columns(stream) - 1  # the last column would wrap
                self._draw(format_progress(counts, self.total, now - self._start, width))
                if final:
                    stream.write("\n")
            else:
                stream.write(format_progress(counts, self.total, now - self._start) + "\n")
            stream.flush()
            self._shown = counts
            self._closed = final
