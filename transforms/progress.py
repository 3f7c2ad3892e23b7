"""Worker side of the local progress line: one tick per finished clip, appended to a file.

Workers may be other processes on the same machine (FnApiRunner ``multi_processing``, a local
PortableRunner worker pool), so each process appends ``status\\n`` lines to its own file
``<directory>/<hostname>-<pid>.log``; the driver counts the lines (``pipeline.progress``).
Only meaningful when ``directory`` is on a file system the driver can read, i.e. local runs.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

import apache_beam as beam

log = logging.getLogger(__name__)


def progress_file(directory: str) -> str:
    """This process's progress file in ``directory``: ``<hostname>-<pid>.log``."""
    host = socket.gethostname().replace(os.sep, "_") or "host"
    return os.path.join(directory, f"{host}-{os.getpid()}.log")


def record_progress(directory: str, status: str, n: int = 1) -> None:
    """Append ``status`` ``n`` times, one line each, to this process's file in ``directory``.

    One ``O_APPEND`` write per call, so lines of concurrent writers (threads of one process)
    never interleave; the directory and file are created on demand.

    Args:
        directory: The progress directory the driver watches.
        status: Free-form outcome, e.g. ``"written"``, ``"failed"``, ``"skipped"``.
        n: How many ticks; nothing is written when ``n <= 0``.

    Raises:
        ValueError: If ``status`` is empty or holds a line break.
        OSError: If the file cannot be written.
    """
    if not status or "\n" in status or "\r" in status:
        raise ValueError(f"progress status must be one non-empty line, got {status!r}")
    if n <= 0:
        return
    os.makedirs(directory, exist_ok=True)
    data = (status + "\n").encode() * n
    fd = os.open(progress_file(directory), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write to a regular file: only when disk is full
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


class _RecordFn(beam.DoFn):
    """Records one tick per element and emits nothing."""

    def __init__(self, directory: str | None, status: str) -> None:
        self._directory = directory
        self._status = status
        self._warned = False

    def process(self, element: object) -> Iterable[None]:
        """Tick; a failing progress write is logged once and never fails the clip."""
        if self._directory is not None:
            try:
                record_progress(self._directory, self._status)
            except OSError as exc:
                if not self._warned:
                    log.warning("cannot record progress in %s: %s", self._directory, exc)
                    self._warned = True
        return ()


class RecordProgress(beam.PTransform):
    """``pcoll | RecordProgress(directory, "written")``: one progress tick per element.

    The output is an empty PCollection. With ``directory=None`` nothing is recorded (the
    transform is still applied, so pipelines look the same with and without progress).
    """

    def __init__(self, directory: str | None, status: str) -> None:
        """Build the transform.

        Args:
            directory: The progress directory, or None to record nothing.
            status: The tick recorded for each element, e.g. ``"written"``.

        Raises:
            ValueError: If ``status`` is empty or holds a line break.
        """
        super().__init__()
        if not status or "\n" in status or "\r" in status:
            raise ValueError(f"progress status must be one non-empty line, got {status!r}")
        self._directory = directory
        self._status = status

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        """Apply the recording DoFn."""
        return pcoll | "Tick" >> beam.ParDo(_RecordFn(self._directory, self._status))
