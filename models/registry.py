"""Model registry: name -> network builder, preprocessing, class names, Grad-CAM layer.

Everything a stage needs to know about a network lives in one :class:`ModelSpec`. Models are
pure PyTorch: nothing here imports Beam. Built-in weights that are not in the package (I3D's)
are downloaded at run time, once: on first use the job's driver fetches them into the cache
directory (``ModelSpec.weights_file``; ``--cache-dir``, ``$VIDXAI_CACHE`` or
``~/.cache/vidxai``), converts them, and ships the converted file to the workers, which never
fetch anything. Later runs read the cached file.

Tensor conventions used across vidxai:
    clip (decoded):   uint8 numpy array (T, H, W, 3), RGB.
    model input:      float tensor (B, C=3, T, H, W), normalised by ``spec.mean``/``spec.std``.
    saliency map:     float tensor (T, H, W).
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.catalog import DESCRIPTIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """How to build, feed and read one network.

    Attributes:
        name: registry key.
        build: ``build(num_classes) -> nn.Module`` with freshly initialised weights.
        num_classes: default number of output classes.
        input_size: default spatial crop (square) fed to the network, in pixels.
        num_frames: default number of frames per clip.
        mean: per-channel RGB mean on the [0, 1] scale, subtracted before ``std`` division.
        std: per-channel RGB standard deviation on the [0, 1] scale.
        resize_ratio: the short side is resized to ``round(size * resize_ratio)`` before the
            centre crop of ``size`` (torchvision video presets: 128 / 112).
        class_names: ``class_names() -> list[str]`` or None (indices are reported then).
        gradcam_layer: dotted module path of the last convolutional block (for Grad-CAM).
        load_default_weights: ``load(model, cache_dir)`` for networks with built-in pretrained
            weights — committed with the package (``synth_small3d``) or fetched once into the
            cache by ``weights_file`` (``i3d_kinetics400``) — returning the weights' identity
            (their SHA-256) when loaded and a false value when not; None when there are none.
        min_frames: smallest clip length the network accepts.
        channels_last: feed batches in ``torch.channels_last_3d`` memory format (on for the
            networks it makes faster, measured per network: docs/BENCHMARKS.md,
            ``memory_format``).
        description: one line for ``--list-models``.
        fixed_input: the network accepts only exactly ``num_frames x input_size x input_size``
            clips (e.g. MViT's learned positional embeddings); other sizes fail.
        weights_note: where pretrained weights come from (for docs and ``--list-models``).
        weights_file: ``weights_file(cache_dir) -> Path``: the local file that
            ``load_default_weights`` reads from ``cache_dir``, fetched and converted first when
            needed; the job calls it once on the driver and ships the file to the workers,
            which then load it with ``load_default_weights(model, <its directory>)`` and never
            fetch anything. None: the built-in weights come with the installed package (or
            there are none).
    """

    name: str
    build: Callable[[int], nn.Module]
    num_classes: int
    input_size: int
    num_frames: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_ratio: float = 1.0
    class_names: Callable[[], list[str]] | None = None
    gradcam_layer: str | None = None
    load_default_weights: Callable[[nn.Module, Path | None], str | bool | None] | None = None
    min_frames: int = 1
    channels_last: bool = False
    description: str = ""
    fixed_input: bool = False
    weights_note: str = ""
    weights_file: Callable[[Path | None], Path] | None = None


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (names are unique); its description, when not given,
    comes from :mod:`models.catalog`."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    if not spec.description and spec.name in DESCRIPTIONS:
        spec = dataclasses.replace(spec, description=DESCRIPTIONS[spec.name])
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # Importing the families registers them; kept lazy so that `models.registry` stays light.
    from models import families  # noqa: F401


def available_models() -> list[str]:
    """Names of all registered networks, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``; ValueError naming the choices otherwise."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}"
        ) from None


def state_dict_from_bytes(data: bytes, name: str) -> dict[str, torch.Tensor]:
    """Read the bytes of a checkpoint file into a state_dict, never unpickling code.

    ``name`` ending in ``.safetensors`` is read with safetensors; anything else with
    ``torch.load(..., weights_only=True)``, which refuses pickled code. A dict under the key
    ``"state_dict"`` or ``"model"`` (training checkpoints) is unwrapped.

    Args:
        data: the whole file content.
        name: the file name or path; only used for the format and in error messages.

    Returns:
        parameter/buffer name -> tensor, on the CPU.

    Raises:
        ValueError: unreadable or unsafe file, or it holds no dict of tensors (names ``name``).
    """
    if name.endswith(".safetensors"):
        from safetensors.torch import load

        try:
            state = load(data)
        except Exception as exc:  # SafetensorError: bad header, truncated file
            raise ValueError(f"checkpoint {name} is not a readable safetensors file: "
                             f"{_one_line(exc)}") from exc
    else:
        if not data.startswith((b"PK\x03\x04", b"\x80")):  # a zip (torch.save) or a pickle
            raise ValueError(f"checkpoint {name} is neither a torch checkpoint (a zip or pickle "
                             f"file) nor .safetensors: it starts with {data[:16]!r}")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, truncated files, code objects refused
            raise ValueError(f"checkpoint {name} cannot be read safely: "
                             f"{_unpickling_reason(exc)}") from exc
    return _as_state_dict(state, name)


def load_state_dict_strict(model: nn.Module, state: dict, name: str) -> None:
    """Load ``state`` into ``model``; every parameter and buffer must match by name and shape.

    Args:
        model: the network (modified in place).
        state: parameter/buffer name -> tensor, e.g. from :func:`state_dict_from_bytes`.
        name: the checkpoint's name, for error messages.

    Raises:
        ValueError: keys are missing or unexpected (the first five of each are named), or a
            tensor's shape differs from the network's.
    """
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches are raised even with strict=False
        raise ValueError(f"checkpoint {name} does not fit the network: {_one_line(exc)}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {name} does not fit the network: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint file into ``model`` without unpickling code.

    Accepts a ``.safetensors`` file or a torch file holding a state_dict (optionally under the
    key ``"state_dict"`` or ``"model"``), see :func:`state_dict_from_bytes`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no matching state_dict (names the missing/unexpected keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = state_dict_from_bytes(path.read_bytes(), str(path))
    load_state_dict_strict(model, state, str(path))


def build_network(spec: ModelSpec, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """A fresh network of ``spec`` with seeded random weights, in eval mode; nothing is loaded.

    Seeds torch's global generator with ``seed`` first, so equal seeds give equal weights.

    Args:
        spec: what to build.
        num_classes: output classes; ``spec.num_classes`` when None.
        seed: seed of the weight initialisation.

    Returns:
        the network on the CPU, mapping (B, 3, T, H, W) to logits (B, num_classes).
    """
    torch.manual_seed(seed)
    model = spec.build(spec.num_classes if num_classes is None else num_classes)
    return model.eval()


def build_model(
    name: str,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Build network ``name`` in eval mode, with weights from ``checkpoint`` if given.

    Without a checkpoint, networks that ship pretrained weights load them
    (``spec.load_default_weights``); all others get seeded random weights and a warning.

    Returns:
        (model on CPU in eval mode, its spec)
    """
    spec = get_spec(name)
    model = build_network(spec, num_classes, seed)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    elif spec.load_default_weights is None or not spec.load_default_weights(model, cache_dir):
        log.warning(
            "model %s runs with seeded RANDOM weights (seed %d): its explanations say nothing "
            "about a trained network; pass --checkpoint for real results", name, seed)
    model.eval()
    return model, spec


def _as_state_dict(state: object, name: str) -> dict[str, torch.Tensor]:
    """``state`` (or its ``"state_dict"``/``"model"`` entry) checked to be a dict of tensors."""
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise ValueError(f"checkpoint {name} does not hold a state_dict "
                         f"(found {type(state).__name__})")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"checkpoint {name} does not hold a state_dict: entries {bad[:5]} "
                         "are not named tensors")
    return state


# Paragraphs of torch's weights_only error that are advice, not the reason (one of them
# suggests weights_only=False, which is exactly what must not be done with untrusted files).
_TORCH_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue")


def _unpickling_reason(exc: Exception) -> str:
    """The informative part of a ``torch.load(weights_only=True)`` error, on one line."""
    lines = (line.strip() for line in str(exc).splitlines())
    kept = [line for line in lines if line and not line.startswith(_TORCH_BOILERPLATE)]
    return " ".join(kept) or _one_line(exc)


def _one_line(exc: BaseException) -> str:
    """``exc``'s message with all whitespace runs collapsed (its type name when empty)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def class_name(spec: ModelSpec, index: int, names: Sequence[str] | None = None) -> str:
    """Human-readable name of class ``index`` (the index as text when names are unknown)."""
    if names is None and spec.class_names is not None:
        names = spec.class_names()
    if names is not None and 0 <= index < len(names):
        return names[index]
    return str(index)
