"""One run per output at a time: a lease in ``OUTPUT/_lock``.

The lease is a small JSON object (run id, host, pid, started, heartbeat). A run creates it
before it touches the output (recovery deletes files, so two runs on one output would corrupt
each other), refreshes the heartbeat every :data:`HEARTBEAT_S` seconds from a daemon thread,
and deletes it at the end, whatever the end. A second run finds the lease and stops with one
line naming the holder; a lease whose run was killed — its process is gone from this host, or
its heartbeat is older than :data:`STALE_S` — is taken over with a warning, and
``--break-lock`` takes over any lease.

Creating the lease must be atomic, or two runs starting together could both win:

- local disk: ``open(O_CREAT | O_EXCL)``; updates by write-to-temporary-then-rename;
- ``s3://``: conditional PUTs (``If-None-Match: *`` to create, ``If-Match: <etag>`` to
  refresh or take over), so a lease that another run took over is noticed at the next
  heartbeat;
- other schemes (``gs://``, …): create, then read back and compare the run id (a narrow race
  remains between two runs starting within the same second; documented).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass

from apache_beam.io.filesystems import FileSystems

from pipeline import storage
from transforms.remote import local_path, scheme

LOCK_NAME = "_lock"
HEARTBEAT_S = 15.0  # how often a running job refreshes its lease
STALE_S = 120.0  # a lease not refreshed for this long belongs to a dead run

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another run holds the output's lease (the message names it)."""


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    started: float
    heartbeat: float

    def dead_here(self) -> bool:
        """True when the holder ran on this host and its process is gone (a killed run)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self, now: float) -> str:
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}, heartbeat "
                f"{now - self.heartbeat:.0f} s ago)")


def _decode(data: bytes) -> Holder | None:
    try:
        raw = json.loads(data)
        return Holder(str(raw["run_id"]), str(raw["host"]), int(raw["pid"]),
                      float(raw["started"]), float(raw["heartbeat"]))
    except (ValueError, KeyError, TypeError):
        return None  # a damaged lease counts as stale


class _Store:
    """Atomic create / compare-and-replace / read / delete of one small object."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.kind = scheme(path)

    # Each method returns a version token (etag, or the content for local files).
    def create(self, data: bytes) -> str | None:
        """Create only if absent; None when it exists."""
        if not self.kind:
            p = local_path(self.path)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return data.decode()
        if self.kind == "s3":
            return self._s3_put(data, IfNoneMatch="*")
        if FileSystems.exists(self.path):
            return None
        with FileSystems.create(self.path) as fh:
            fh.write(data)
        got = self.read()
        return None if got is None or got[0] != data else got[1]

    def replace(self, data: bytes, version: str) -> str | None:
        """Replace if still at ``version``; None when someone else changed it."""
        if not self.kind:
            current = self.read()
            if current is None or current[1] != version:
                return None
            p = local_path(self.path)
            tmp = f"{p}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, p)
            return data.decode()
        if self.kind == "s3":
            return self._s3_put(data, IfMatch=version)
        current = self.read()
        if current is None or current[1] != version:
            return None
        with FileSystems.create(self.path) as fh:
            fh.write(data)
        return data.decode()

    def read(self) -> tuple[bytes, str] | None:
        if not self.kind:
            try:
                with open(local_path(self.path), "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                return None
            return data, data.decode(errors="replace")
        if self.kind == "s3":
            bucket, key = self._s3_key()
            client = storage.s3_settings().client()
            try:
                obj = client.get_object(Bucket=bucket, Key=key)
            except client.exceptions.NoSuchKey:
                return None
            return obj["Body"].read(), obj["ETag"]
        if not FileSystems.exists(self.path):
            return None
        with FileSystems.open(self.path) as fh:
            data = fh.read()
        return data, data.decode(errors="replace")

    def delete(self) -> None:
        with contextlib.suppress(Exception):
            if not self.kind:
                os.unlink(local_path(self.path))
            else:
                FileSystems.delete([self.path])

    def _s3_key(self) -> tuple[str, str]:
        bucket, _, key = self.path.split("://", 1)[1].partition("/")
        return bucket, key

    def _s3_put(self, data: bytes, **condition) -> str | None:
        from botocore.exceptions import ClientError

        bucket, key = self._s3_key()
        try:
            return storage.s3_settings().client().put_object(Bucket=bucket, Key=key, Body=data,
                                                             **condition)["ETag"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return None
            raise


class Lease:
    """The lease of one run on one output (a context manager: released on exit)."""

    def __init__(self, output: str, run_id: str, break_lock: bool = False,
                 stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = FileSystems.join(output, LOCK_NAME)
        self.store = _Store(self.path)
        self.holder = Holder(run_id, socket.gethostname(), os.getpid(), time.time(),
                             time.time())
        self.break_lock, self.stale_s, self.heartbeat_s = break_lock, stale_s, heartbeat_s
        self.version: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        return json.dumps(asdict(self.holder), sort_keys=True).encode()

    def acquire(self) -> Lease:
        """Take the lease, or raise :class:`LockHeld` naming its holder."""
        for _ in range(3):  # a lease deleted or replaced under us: look again
            self.version = self.store.create(self._payload())
            if self.version is not None:
                break
            found = self.store.read()
            if found is None:
                continue
            other = _decode(found[0])
            now = time.time()
            fresh = (other is not None and now - other.heartbeat < self.stale_s
                     and not other.dead_here())
            if fresh and not self.break_lock:
                raise LockHeld(f"{self.path} is held by {other.describe(now)}: another run "
                               f"is using this output; wait for it, or pass --break-lock if "
                               f"it is dead")
            self.version = self.store.replace(self._payload(), found[1])
            if self.version is not None:
                print(f"vidxai: {self.path}: took over the lease of "
                      f"{other.describe(now) if other else 'an unreadable lease'}",
                      file=sys.stderr)
                break
        else:
            raise LockHeld(f"{self.path} changed while this run tried to take it; try again")
        self._thread = threading.Thread(target=self._beat, name="vidxai-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.holder = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
            try:
                version = self.store.replace(self._payload(), self.version or "")
            except Exception as exc:  # noqa: BLE001 - a failed refresh is retried next beat
                log.warning("%s: could not refresh the lease: %s", self.path, exc)
                continue
            if version is None:
                self.lost = True
                log.error("%s: this run's lease was taken over by another run", self.path)
                return
            self.version = version

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost:
            return
        found = self.store.read()
        if found is not None and found[1] == self.version:
            self.store.delete()

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
