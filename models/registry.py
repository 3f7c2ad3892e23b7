"""Model registry: name -> network builder, preprocessing, class names, Grad-CAM layer.

Everything a stage needs to know about a network lives in one :class:`ModelSpec`. Models are
pure PyTorch: nothing here imports Beam, and nothing downloads at run time.

Tensor conventions used across vidxai:
    clip (decoded):   uint8 numpy array (T, H, W, 3), RGB.
    model input:      float tensor (B, C=3, T, H, W), normalised by ``spec.mean``/``spec.std``.
    saliency map:     float tensor (T, H, W).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

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
        load_default_weights: ``load(model, cache_dir) -> bool`` for networks whose pretrained
            weights come with the project's installer; None when there are none.
        min_frames: smallest clip length the network accepts.
        channels_last: feed batches in ``torch.channels_last_3d`` memory format (measured 1.7×
            faster for I3D fp32 and 2.4× for bf16 on the project's 2-core CPU, slower for the
            small synthetic network; see benchmarks/).
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
    load_default_weights: Callable[[nn.Module, Path | None], bool] | None = None
    min_frames: int = 1
    channels_last: bool = False
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
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


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint into ``model`` without unpickling code.

    Accepts a ``.safetensors`` file or a torch file holding a state_dict (optionally under the
    key ``"state_dict"`` or ``"model"``), always read with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no matching state_dict (names the missing/unexpected keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, truncated files, code objects refused
            raise ValueError(f"checkpoint {path} cannot be read safely: {exc}") from exc
        if isinstance(state, dict):
            for key in ("state_dict", "model"):
                if key in state and isinstance(state[key], dict):
                    state = state[key]
                    break
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} does not hold a state_dict")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {path} does not fit the network: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


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
    torch.manual_seed(seed)
    model = spec.build(num_classes or spec.num_classes)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    elif spec.load_default_weights is None or not spec.load_default_weights(model, cache_dir):
        log.warning(
            "model %s runs with seeded RANDOM weights (seed %d): its explanations say nothing "
            "about a trained network; pass --checkpoint for real results", name, seed)
    model.eval()
    return model, spec


def class_name(spec: ModelSpec, index: int, names: Sequence[str] | None = None) -> str:
    """Human-readable name of class ``index`` (the index as text when names are unknown)."""
    if names is None and spec.class_names is not None:
        names = spec.class_names()
    if names is not None and 0 <= index < len(names):
        return names[index]
    return str(index)
