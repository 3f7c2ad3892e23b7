"""Real services the tests start on 127.0.0.1 and stop: an S3 API server (moto's standalone
server, ``moto[server]``), reached by Beam's S3 filesystem, pyarrow and boto3 alike."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@contextlib.contextmanager
def process(args: list[str], port: int, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run a server process in its own session until the block ends, then kill the session
    (children included), even when the block fails."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class S3Server:
    """An S3 API endpoint and credentials that it accepts."""

    url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def flags(self, access_key: str | None = None, secret_key: str | None = None
              ) -> list[str]:
        """Beam's own storage flags for this endpoint."""
        return ["--s3_endpoint_url", self.url,
                "--s3_access_key_id", access_key or self.access_key,
                "--s3_secret_access_key", secret_key or self.secret_key,
                "--s3_region_name", self.region]

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)


def _moto_server() -> list[str]:
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "moto.server"]


@contextlib.contextmanager
def s3_server(authenticate: bool = False) -> Iterator[S3Server]:
    """moto's S3 API server on a free loopback port.

    Args:
        authenticate: check credentials like AWS does (moto's IAM emulation): the server
            creates one IAM user allowed ``s3:*`` and accepts only its key; any other key is
            refused with ``InvalidAccessKeyId``.
    """
    port = free_port()
    env = dict(os.environ)
    if authenticate:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"  # the three IAM calls below
    with process([*_moto_server(), "-H", "127.0.0.1", "-p", str(port)], port, env):
        server = S3Server(f"http://127.0.0.1:{port}")
        if authenticate:
            import json

            import boto3

            iam = boto3.client("iam", endpoint_url=server.url, aws_access_key_id="setup",
                               aws_secret_access_key="setup", region_name=server.region)
            iam.create_user(UserName="vidxai")
            iam.put_user_policy(UserName="vidxai", PolicyName="s3", PolicyDocument=json.dumps(
                {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
            key = iam.create_access_key(UserName="vidxai")["AccessKey"]
            server = S3Server(server.url, key["AccessKeyId"], key["SecretAccessKey"])
        yield server
