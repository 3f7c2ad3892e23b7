"""Files on any Beam FileSystem as local files, for libraries that need a path (OpenCV).

A local path is used in place (the fast path). A URI with a scheme (``s3://``, ``gs://``, …)
is streamed through Beam ``FileSystems`` into a worker-local temporary directory in chunks,
under its own base name (so loaders that look for a file name find it), memory holding one
chunk and disk one file; the copy is removed when the ``with`` block ends, whatever happens
inside it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

CHUNK = 1 << 20  # bytes per read while copying a remote file


@dataclass(frozen=True)
class FileSystemsOptions:
    """The pipeline's options (storage endpoints and credentials among them) for Beam
    ``FileSystems`` in a worker process.

    Beam's container boot sets them in every SDK worker, but workers started by an external
    worker pool (``--environment_type EXTERNAL``) or in-process never do, and an ``s3://``
    read there fails with "Must provide one of client or options". Every step that reads or
    writes files carries this object and calls :meth:`apply` first; it sets the same
    non-default options that Beam's own worker start-up would set.
    """

    values: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, options: PipelineOptions) -> FileSystemsOptions:
        return cls(tuple(sorted(options.get_all_options(drop_default=True).items())))

    def apply(self) -> None:
        if self.values:
            FileSystems.set_options(PipelineOptions.from_dictionary(dict(self.values)))


NO_OPTIONS = FileSystemsOptions()  # the process's FileSystems are left as they are


def scheme(path: str) -> str:
    """``"s3"`` for ``s3://b/k``; ``""`` for a local path (``file://`` counts as local)."""
    head, sep, _ = path.partition("://")
    return "" if not sep or head == "file" else head.lower()


def is_remote(path: str) -> bool:
    return scheme(path) != ""


def local_path(path: str) -> str:
    """``path`` without a ``file://`` prefix."""
    return path[len("file://"):] if path.startswith("file://") else path


def _copy(path: str, what: str, directory: str) -> str:
    """Stream remote ``path`` into ``directory`` under its base name; the local file's path.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        OSError: it cannot be read (permissions, network, credentials; the message names it).
    """
    tmp = os.path.join(directory, posixpath.basename(path.rstrip("/")) or "file")
    with open(tmp, "wb") as out:
        try:
            if not FileSystems.exists(path):
                raise FileNotFoundError(f"{path}: {what} does not exist")
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
                shutil.copyfileobj(src, out, CHUNK)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - credentials, network, permissions
            raise OSError(f"{path}: {what} cannot be read: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    return tmp


@contextlib.contextmanager
def local_copy(path: str, what: str = "file") -> Iterator[str]:
    """A local path holding the content of ``path`` for the duration of the block.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        OSError: it cannot be read (permissions, network, credentials; the message names it).
    """
    if not is_remote(path):
        yield local_path(path)
        return
    directory = tempfile.mkdtemp(prefix="vidxai-")
    try:
        yield _copy(path, what, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class LocalCopies:
    """Worker-local copies of remote files kept for reuse, so that the clips of one video
    (``--clips-per-video``, ``--clip-hop``) decode from one copy instead of one copy each.

    At most ``max_files`` copies are kept; the least recently used one is removed when another
    is needed, and :meth:`close` removes the rest (a DoFn calls it in ``teardown``). Local
    paths pass through untouched. Not thread-safe: one instance per DoFn instance.
    """

    def __init__(self, max_files: int = 2) -> None:
        if max_files < 1:
            raise ValueError(f"max_files must be >= 1, got {max_files}")
        self.max_files = max_files
        self.copies = 0  # remote files copied so far (for tests and counters)
        self._dirs: dict[str, str] = {}  # uri -> its temporary directory, oldest first

    def get(self, path: str, what: str = "file") -> str:
        """A local path with the content of ``path`` (valid until evicted or closed)."""
        if not is_remote(path):
            return local_path(path)
        if path in self._dirs:
            self._dirs[path] = self._dirs.pop(path)  # most recently used last
        else:
            while len(self._dirs) >= self.max_files:
                shutil.rmtree(self._dirs.pop(next(iter(self._dirs))), ignore_errors=True)
            directory = tempfile.mkdtemp(prefix="vidxai-")
            try:
                _copy(path, what, directory)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            self._dirs[path] = directory
            self.copies += 1
        return os.path.join(self._dirs[path], posixpath.basename(path.rstrip("/")) or "file")

    @contextlib.contextmanager
    def use(self, path: str, what: str = "file") -> Iterator[str]:
        """:meth:`get` as a context manager (the copy outlives the block)."""
        yield self.get(path, what)

    def close(self) -> None:
        """Remove every copy."""
        for directory in self._dirs.values():
            shutil.rmtree(directory, ignore_errors=True)
        self._dirs.clear()
