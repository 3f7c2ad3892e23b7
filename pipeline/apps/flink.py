"""Beam's Flink job server for vidxai: fetched from Maven Central once, cached, started locally.

    python -m pipeline.apps.flink jar      # fetch (once) and print the job-server jar's path
    python -m pipeline.apps.flink serve    # run it on 127.0.0.1 with Flink's mini-cluster
    python -m pipeline.apps.flink pool --port 50000   # Beam's SDK worker pool on 127.0.0.1

The jar goes to Beam's own Flink flags (``--runner FlinkRunner --flink_master [local]
--flink_version 1.19 --flink_job_server_jar JAR``), or ``serve`` starts it for
``--runner PortableRunner --job_endpoint 127.0.0.1:PORT``.

Which jar. Beam publishes one shaded jar per Flink version,
``org.apache.beam:beam-runners-flink-<X.Y>-job-server:<beam>``; Beam 2.77's Python SDK knows
Flink 1.19, 1.20, 2.0, 2.1 and 2.2. :func:`job_server_jar` asks Maven for that jar first. The
Maven Central this project's machines reach serves none of those jars (for no Beam version), nor
any 2.77.0 Java artifact, so it falls back to the newest Beam Flink runner whose runtime
dependencies all resolve there, ``org.apache.beam:beam-runners-flink-1.19:2.62.0`` (the library
the shaded jar is built from: it holds ``FlinkJobServerDriver``): ``mvn
dependency:copy-dependencies`` puts it and its dependencies beside a small jar whose manifest
names them (``Main-Class``, ``Class-Path``), which ``java -jar`` and Beam's FlinkRunner start like
the shaded one. The Python SDK (2.77) and the job server (2.62) then speak the portability API
(the Fn API and the Runner API protos) across versions; ``tests/test_flink.py`` checks that the
maps equal a local run's.

Cache: ``$VIDXAI_CACHE/jars`` or ``~/.cache/vidxai/jars`` (see
:func:`models.i3d_weights.resolve_cache_dir`), fetched once; Maven's own ``~/.m2`` also keeps a
copy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models.i3d_weights import resolve_cache_dir

BEAM_GROUP = "org.apache.beam"
FLINK_VERSION, BEAM_JAVA_VERSION = "1.19", "2.62.0"
"""The default pair: the newest Beam Flink runner this machine's Maven Central serves whole."""
SLF4J_BINDING = "org.slf4j:slf4j-simple:1.7.30"
"""Logs of the job server (the runner's slf4j-api is 1.7.30; without a binding it says nothing)."""

STARTUP_SECONDS = 120.0


class JobServerUnavailable(RuntimeError):
    """The Flink job server cannot be fetched or started; the message is one line with why."""


def jars_dir(cache_dir: str | Path | None = None) -> Path:
    """``<cache>/jars``: where the job-server jars live."""
    return resolve_cache_dir(cache_dir) / "jars"


def require_tool(name: str, why: str) -> str:
    """The absolute path of ``name`` on PATH, or a one-line JobServerUnavailable naming it."""
    path = shutil.which(name)
    if not path:
        raise JobServerUnavailable(f"'{name}' is not on PATH: it is needed to {why} "
                                   f"(Debian: apt-get install "
                                   f"{'maven' if name == 'mvn' else 'openjdk-17-jre-headless'})")
    return path


def _maven_error(output: str) -> str:
    """The one line of Maven's output that says why it failed."""
    for pattern in (r"Could not find artifact [^\s]+", r"Could not resolve dependencies[^\n]*",
                    r"Could not transfer artifact[^\n]*", r"Unknown host[^\n]*",
                    r"Connection refused[^\n]*", r"\[ERROR\] [^\n]+"):
        m = re.search(pattern, output)
        if m:
            return m.group(0).replace("[ERROR] ", "").replace(" -> [Help 1]", "").strip()
    return output.strip().splitlines()[-1] if output.strip() else "no output"


def _mvn(args: list[str], cwd: Path) -> tuple[bool, str]:
    mvn = require_tool("mvn", "fetch Beam's Flink job server from Maven Central")
    proc = subprocess.run([mvn, "-B", "-q", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1800)
    return proc.returncode == 0, proc.stdout + proc.stderr


def _pom(artifacts: list[str]) -> str:
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
        "</dependency>" for g, a, v in (s.split(":") for s in artifacts))
    return ('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0'
            '</modelVersion><groupId>vidxai</groupId><artifactId>flink-job-server</artifactId>'
            f'<version>1</version><packaging>pom</packaging><dependencies>{deps}</dependencies>'
            '</project>')


def manifest(main_class: str, class_path: list[str]) -> bytes:
    """A jar manifest with ``Main-Class`` and ``Class-Path`` (lines wrapped at 72 bytes).

    Args:
        main_class: the class ``java -jar`` runs.
        class_path: jar paths relative to the manifest's jar, space-free.
    """
    lines = ["Manifest-Version: 1.0", f"Main-Class: {main_class}",
             "Class-Path: " + " ".join(class_path), "Created-By: vidxai"]
    out = []
    for line in lines:
        raw = line.encode()
        out.append(raw[:72])
        out.extend(b" " + raw[i:i + 71] for i in range(72, len(raw), 71))
    return b"\r\n".join(out) + b"\r\n\r\n"


def _assemble(target: Path, flink: str, beam: str, work: Path) -> None:
    """Copy the runner library and its runtime dependencies into ``<target stem>-lib/`` beside
    ``target``, and write ``target``: a jar holding only a manifest that names them."""
    lib = target.with_name(target.stem + "-lib")
    (work / "pom.xml").write_text(_pom([f"{BEAM_GROUP}:beam-runners-flink-{flink}:{beam}",
                                        SLF4J_BINDING]))
    ok, out = _mvn(["dependency:copy-dependencies", f"-DoutputDirectory={lib}",
                    "-DincludeScope=runtime"], work)
    if not ok:
        raise JobServerUnavailable(
            f"Maven Central serves neither beam-runners-flink-{flink}-job-server:{beam} nor "
            f"beam-runners-flink-{flink}:{beam} with its dependencies: {_maven_error(out)}")
    jars = sorted(p.name for p in lib.glob("*.jar"))
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF",
                    manifest("org.apache.beam.runners.flink.FlinkJobServerDriver",
                             [f"{lib.name}/{j}" for j in jars]))
    tmp.replace(target)


def _complete(jar: Path) -> bool:
    """The jar exists and every jar its manifest names does."""
    try:
        with zipfile.ZipFile(jar) as zf:
            text = zf.read("META-INF/MANIFEST.MF").decode()
    except (OSError, KeyError, zipfile.BadZipFile):
        return False
    text = text.replace("\r\n ", "").replace("\n ", "")
    paths = [ln.split(":", 1)[1].split() for ln in text.splitlines()
             if ln.startswith("Class-Path:")]
    return all((jar.parent / p).is_file() for p in (paths[0] if paths else []))


def job_server_jar(cache_dir: str | Path | None = None, flink: str | None = None,
                   beam: str | None = None) -> Path:
    """Beam's Flink job-server jar in the cache, fetched with Maven on first use.

    With ``flink`` and ``beam`` given: the published shaded jar
    ``beam-runners-flink-<flink>-job-server:<beam>`` (``mvn dependency:copy``), or, when Maven
    Central refuses it, the runner library of that version assembled as the module docstring
    says. Without them: :data:`FLINK_VERSION` / :data:`BEAM_JAVA_VERSION`, the newest this
    machine's Maven Central serves whole.

    Raises:
        JobServerUnavailable: no Java 11+ to run the jar, no mvn, or Maven Central refuses
            (one line with Maven's reason).
    """
    java_launcher()  # a jar nothing can run is no use: say so before fetching 150 MB
    flink, beam = flink or FLINK_VERSION, beam or BEAM_JAVA_VERSION
    d = jars_dir(cache_dir)
    shaded = d / f"beam-runners-flink-{flink}-job-server-{beam}.jar"
    assembled = d / f"beam-runners-flink-{flink}-{beam}-job-server.jar"
    if shaded.is_file():
        return shaded
    if _complete(assembled):
        return assembled
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vidxai-mvn-") as work:
        ok, out = _mvn(["dependency:copy",
                        f"-Dartifact={BEAM_GROUP}:beam-runners-flink-{flink}-job-server:{beam}",
                        f"-DoutputDirectory={d}"], Path(work))
        if ok and shaded.is_file():
            return shaded
        if "Could not find artifact" not in out and "Unable to find artifact" not in out:
            raise JobServerUnavailable(f"Maven could not fetch beam-runners-flink-{flink}-"
                                       f"job-server:{beam}: {_maven_error(out)}")
        _assemble(assembled, flink, beam, Path(work))
    return assembled


def java_major(java: str) -> int:
    """The major version of the ``java`` launcher (17 for ``openjdk version "17.0.15"``)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        raise JobServerUnavailable(f"cannot read the version of {java}: {out.strip()[:200]}")
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 else major


def java_launcher() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked to be Java 11 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = (str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").is_file()
            else require_tool("java", "run Beam's Flink job server (Java 11 or 17)"))
    major = java_major(java)
    if major < 11:
        raise JobServerUnavailable(f"{java} is Java {major}: Flink 1.19 needs Java 11 or 17")
    return java


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str,
                  timeout: float = STARTUP_SECONDS) -> None:
    """Return once 127.0.0.1:port accepts connections; raise if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise JobServerUnavailable(f"{what} exited with code {proc.returncode} before it "
                                       f"listened on 127.0.0.1:{port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise JobServerUnavailable(f"{what} did not listen on 127.0.0.1:{port} "
                               f"within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it after ``grace`` s; reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children the leader left behind
    proc.wait()


@dataclass(frozen=True)
class Service:
    """A process listening on 127.0.0.1: its endpoint, and how long it took to listen."""

    endpoint: str
    startup_seconds: float
    process: subprocess.Popen


def job_server_command(jar: Path, job_port: int, artifact_port: int,
                       flink_master: str = "[local]") -> list[str]:
    """The command that runs the job server on 127.0.0.1 (expansion service off)."""
    return [java_launcher(), "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-jar", str(jar), "--job-host", "127.0.0.1", "--job-port", str(job_port),
            "--artifact-port", str(artifact_port), "--expansion-port", "-1",
            "--flink-master", flink_master]


@contextlib.contextmanager
def job_server(jar: Path, flink_master: str = "[local]", log: Path | None = None
               ) -> Iterator[Service]:
    """Beam's Flink job server on free ports for the ``with`` block, then stopped.

    It announces 127.0.0.1, but its job and artifact ports listen on every interface (Beam's
    Java job server binds the wildcard address). ``flink_master="[local]"`` runs jobs on
    Flink's embedded mini-cluster in the same JVM. Output goes to ``log`` (else discarded).
    """
    job_port, artifact_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="vidxai-flink-") as tmp:
        cmd = job_server_command(jar, job_port, artifact_port, flink_master)
        cmd[cmd.index("-jar"):cmd.index("-jar")] = [f"-Djava.io.tmpdir={tmp}"]
        cmd += ["--artifacts-dir", str(Path(tmp) / "artifacts")]
        sink = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp,
                                start_new_session=True)
        try:
            wait_for_port(job_port, proc, "the Flink job server")
            yield Service(f"127.0.0.1:{job_port}", time.perf_counter() - t0, proc)
        finally:
            stop_process(proc)
            if log:
                sink.close()


def serve_worker_pool(port: int) -> None:
    """Beam's Python SDK worker pool listening on 127.0.0.1:port only, until killed.

    The same servicer as ``python -m apache_beam.runners.worker.worker_pool_main`` (workers
    as processes), which listens on every interface (``[::]``); this one on loopback.
    """
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
    from apache_beam.utils import thread_pool_executor

    server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                         options=[("grpc.http2.max_pings_without_data", 0),
                                  ("grpc.http2.max_ping_strikes", 0)])
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise JobServerUnavailable(f"the worker pool cannot listen on 127.0.0.1:{port}")
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        BeamFnExternalWorkerPoolServicer(use_process=True), server)
    server.start()
    server.wait_for_termination()


@contextlib.contextmanager
def worker_pool() -> Iterator[Service]:
    """Beam's Python SDK worker pool (:func:`serve_worker_pool`) on a free 127.0.0.1 port.

    Its workers are started as ``python``: this interpreter's directory goes first on PATH.
    """
    port = free_port()
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.apps.flink", "pool",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, proc, "the SDK worker pool")
        yield Service(f"127.0.0.1:{port}", time.perf_counter() - t0, proc)
    finally:
        stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.apps.flink",
                                 description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in (("jar", "fetch the job-server jar once and print its path"),
                       ("serve", "run the job server on 127.0.0.1 until interrupted")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--cache-dir", default=None, help="default: $VIDXAI_CACHE or "
                       "~/.cache/vidxai (the jar goes to its jars/)")
        p.add_argument("--flink-version", default=None, help=f"default: {FLINK_VERSION}")
        p.add_argument("--beam-version", default=None,
                       help=f"Beam Java version (default: {BEAM_JAVA_VERSION})")
    sub.choices["serve"].add_argument("--flink-master", default="[local]",
                                      help="[local] (mini-cluster, default) or host:8081")
    pool = sub.add_parser("pool", help="run Beam's SDK worker pool on 127.0.0.1:PORT")
    pool.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    if args.command == "pool":
        serve_worker_pool(args.port)
        return 0
    try:
        jar = job_server_jar(args.cache_dir, args.flink_version, args.beam_version)
        if args.command == "jar":
            print(jar)
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the JVM on SIGTERM too
        with job_server(jar, args.flink_master) as js:
            print(f"Flink job server on {js.endpoint} (--runner PortableRunner "
                  f"--job_endpoint {js.endpoint}); Ctrl-C stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                js.process.wait()
    except JobServerUnavailable as exc:
        print(f"vidxai: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
