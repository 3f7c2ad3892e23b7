"""Where a run reads and writes: Beam's storage flags, pyarrow filesystems, up-front checks.

Credentials and endpoints are Beam's own flags (``--s3_endpoint_url``, ``--s3_access_key_id``,
``--s3_secret_access_key``, ``--s3_session_token``, ``--s3_region_name``, ``--s3_verify``,
``--s3_disable_ssl``; GCS uses the machine's application-default credentials, as Beam does).
:func:`configure` hands them to Beam ``FileSystems`` (which writes and reads files on the
driver and the workers) and keeps them for :func:`arrow_filesystem`, the pyarrow filesystem
through which every Parquet table of an output is read (``pipeline.outputs``).

The checks here run on the driver before any work and answer in one line. On ``s3://`` they
talk to the endpoint with boto3 directly, one attempt each with short timeouts: Beam's S3
client retries a refused connection with exponential back-off for minutes before it fails.
"""

from __future__ import annotations

import functools
import os
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from transforms.remote import is_remote, local_path, scheme


@dataclass(frozen=True)
class S3Settings:
    """Beam's ``--s3_*`` flags (None: boto3's / pyarrow's own default chain)."""

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    region_name: str | None = None
    verify: str | None = None
    disable_ssl: bool = False

    @classmethod
    def from_options(cls, options: PipelineOptions) -> S3Settings:
        o = options.view_as(S3Options)
        return cls(o.s3_endpoint_url, o.s3_access_key_id, o.s3_secret_access_key,
                   o.s3_session_token, o.s3_region_name, o.s3_verify, bool(o.s3_disable_ssl))

    def client(self):
        """A boto3 S3 client that tries once, with short timeouts (for checks)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key, aws_session_token=self.session_token,
            region_name=self.region_name or "us-east-1", use_ssl=not self.disable_ssl,
            verify=_verify(self.verify),
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                          read_timeout=30))


def _verify(value: str | None):
    if value is None:
        return None
    if str(value).lower() in ("false", "0", "no"):
        return False
    return value  # a CA bundle path


_settings = S3Settings()


def configure(options: PipelineOptions) -> None:
    """Use the storage flags of ``options`` here (driver) for FileSystems and pyarrow."""
    global _settings
    FileSystems.set_options(options)
    _settings = S3Settings.from_options(options)


def s3_settings() -> S3Settings:
    return _settings


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``uri`` and the path within it.

    Raises:
        ValueError: a scheme whose tables cannot be read here.
    """
    kind = scheme(uri)
    if not kind:
        return _filesystem("", None), os.path.abspath(local_path(uri))
    path = uri.split("://", 1)[1].rstrip("/")
    return _filesystem(kind, _settings if kind == "s3" else None), path


@functools.lru_cache(maxsize=8)
def _filesystem(kind: str, s: S3Settings | None) -> pafs.FileSystem:
    """One pyarrow filesystem per scheme and settings (the S3 client is reused)."""
    if not kind:
        return pafs.LocalFileSystem()
    if kind == "s3":
        assert s is not None
        kwargs: dict = {"region": s.region_name or "us-east-1"}
        if s.access_key_id:
            kwargs.update(access_key=s.access_key_id, secret_key=s.secret_access_key,
                          session_token=s.session_token)
        if s.endpoint_url:
            url = urlparse(s.endpoint_url)
            kwargs.update(endpoint_override=url.netloc or url.path,
                          scheme=url.scheme or ("http" if s.disable_ssl else "https"))
        elif s.disable_ssl:
            kwargs["scheme"] = "http"
        return pafs.S3FileSystem(**kwargs)
    if kind == "gs":
        return pafs.GcsFileSystem()
    raise ValueError(f"output tables can be read on local disk, s3:// and gs://, not {kind}://")


# --- checks before any work ----------------------------------------------------------------


def _s3_reason(exc: Exception, endpoint: str | None) -> str:
    """One line for a boto3 error."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    where = endpoint or "AWS"
    if isinstance(exc, EndpointConnectionError):
        return (f"cannot reach the S3 endpoint {where} (check --s3_endpoint_url and that the "
                "server runs)")
    if isinstance(exc, NoCredentialsError):
        return ("no S3 credentials: give --s3_access_key_id and --s3_secret_access_key (or "
                "the AWS environment variables)")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                    "ExpiredToken") or (status == 403 and code in ("403", "Forbidden")):
            return (f"the S3 endpoint {where} refused the credentials ({code or status}): "
                    "check --s3_access_key_id and --s3_secret_access_key")
        if code in ("AccessDenied", "AllAccessDisabled"):
            return f"access denied by the S3 endpoint {where} ({code})"
        if code in ("NoSuchBucket", "404", "NotFound"):
            return "the bucket does not exist"
        return f"the S3 endpoint {where} answered {code or status}: {err.get('Message', '')}"
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def _check_bucket(uri: str, what: str) -> None:
    s = _settings
    bucket, key = _split_s3(uri)
    try:  # a GET (unlike HEAD) says why it is refused: InvalidAccessKeyId, NoSuchBucket, …
        s.client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        reason = _s3_reason(exc, s.endpoint_url)
        if reason == "the bucket does not exist":
            reason = f"bucket {bucket} does not exist"
        raise ValueError(f"{what} {uri}: {reason}") from None


def check_readable(uri: str, what: str, must_exist: bool = True) -> None:
    """Fail in one line when ``uri`` (a file) cannot be read: endpoint, credentials, bucket,
    object. Local paths and other schemes are checked where they are read."""
    if scheme(uri) != "s3":
        return
    _check_bucket(uri, what)
    if not must_exist:
        return
    bucket, key = _split_s3(uri)
    try:
        _settings.client().head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - mapped to one line
        reason = _s3_reason(exc, _settings.endpoint_url)
        if reason == "the bucket does not exist":
            reason = "no such object"
        raise ValueError(f"{what} {uri}: {reason}") from None


def check_writable(root: str, what: str = "--output") -> None:
    """Create and delete a probe file under ``root``; one line when that fails. A local
    directory that does not exist yet is not created here: its nearest existing parent must
    be a writable directory.

    Raises:
        ValueError: ``root`` is a file, or cannot be created or written.
    """
    name = f"_probe-{uuid.uuid4().hex[:12]}"
    if not is_remote(root):
        _check_local_writable(local_path(root), root, what, name)
        return
    if scheme(root) == "s3":
        _check_bucket(root, what)
        bucket, key = _split_s3(root)
        client = _settings.client()
        probe = posixpath.join(key, name) if key else name
        try:
            client.put_object(Bucket=bucket, Key=probe, Body=b"")
            client.delete_object(Bucket=bucket, Key=probe)
        except Exception as exc:  # noqa: BLE001 - mapped to one line
            raise ValueError(f"{what} {root} is not writable: "
                             f"{_s3_reason(exc, _settings.endpoint_url)}") from None
        return
    probe = FileSystems.join(root, name)
    try:
        with FileSystems.create(probe) as fh:
            fh.write(b"")
        FileSystems.delete([probe])
    except Exception as exc:  # noqa: BLE001 - any FileSystem's error, on one line
        raise ValueError(f"{what} {root} is not writable: "
                         f"{' '.join(str(exc).split())[:300]}") from None


def _check_local_writable(path: str, root: str, what: str, name: str) -> None:
    if os.path.isdir(path):
        try:
            probe = os.path.join(path, name)
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise ValueError(f"{what} {root} is not writable: {exc.strerror or exc}") from None
        return
    if os.path.exists(path):
        raise ValueError(f"{what} {root} is a file, not a directory")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{what} {root} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {root} cannot be created: {parent} is not writable")


# --- copying a directory to an output --------------------------------------------------------


def publish_dir(local_dir: str, target: str) -> list[str]:
    """Copy every file under ``local_dir`` to ``target`` (a FileSystems directory URI),
    replacing what ``target`` held; returns the written URIs."""
    old = []
    try:
        old = [m.path for r in FileSystems.match([FileSystems.join(target, "**")])
               for m in r.metadata_list]
    except Exception:  # noqa: BLE001 - nothing there yet
        pass
    written = []
    for root, _, files in os.walk(local_dir):
        for f in sorted(files):
            src = os.path.join(root, f)
            rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
            dest = FileSystems.join(target, *rel.split("/"))
            with open(src, "rb") as fh, FileSystems.create(dest) as out:
                out.write(fh.read())
            written.append(dest)
    stale = sorted(set(old) - set(written))
    if stale:
        FileSystems.delete(stale)
    return written
