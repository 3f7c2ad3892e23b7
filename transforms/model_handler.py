"""The model handler: one picklable object that knows how to build, feed and load a network.

In the spirit of Beam's ``ml.inference`` handlers (``pytorch_inference.PytorchModelHandler``):
the handler holds only plain settings, so it pickles to any worker; the network is built and
loaded on the worker (:meth:`VideoModelHandler.load_model`: device, precision, weights), and
the scoring DoFn shares the result per worker process through ``beam.utils.shared.Shared``
(the one cache: :meth:`share_tag` names it). Checkpoints and class-name files are read through
Beam ``FileSystems``, so local paths and cloud URIs (``gs://``, ``s3://``, …) both work.

A network is either a registered name (``models.registry``) or a user's own factory,
``package.module:callable`` returning an ``nn.Module`` (``models.factory``), with the
preprocessing given as options. Weights come from ``checkpoint`` (a ``.safetensors`` file or a
torch state_dict, read with ``weights_only=True``), else from the network's built-in weights,
else they are seeded random weights (and a warning says so).

The weights' identity, ``weights_sha256``, enters the run's ``config_hash`` and every output
row: the SHA-256 of the checkpoint file's bytes (what ``sha256sum`` prints), of the built-in
weights file, or ``random-seed-N``. A retrained checkpoint with the same name and size is
therefore a different configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from apache_beam.io.filesystems import FileSystems
from torch import nn

from models.factory import factory_spec, is_factory
from models.registry import (
    ModelSpec,
    build_network,
    get_spec,
    load_state_dict_strict,
    state_dict_from_bytes,
)
from transforms.remote import NO_OPTIONS, FileSystemsOptions, local_copy
from transforms.scoring import (
    PRECISIONS,
    Scorer,
    check_device_name,
    resolve_device,
    resolve_precision,
)

log = logging.getLogger(__name__)


def read_bytes(uri: str, what: str) -> bytes:
    """The bytes of a file or FileSystems URI; ValueError naming ``what`` when missing."""
    try:
        if not FileSystems.exists(uri):
            raise ValueError(f"{what} {uri} does not exist")
        with FileSystems.open(uri) as fh:
            return fh.read()
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - unknown scheme, permissions, network
        raise ValueError(f"{what} {uri} cannot be read: {exc}") from exc


@dataclass(frozen=True)
class ModelConfig:
    """Which network, with which preprocessing and weights (the options table: README.md).

    Attributes:
        model: a registered name, or ``package.module:callable`` (a user's factory).
        checkpoint: weights file or FileSystems URI (None: built-in or random weights).
        num_classes: output classes (default: the network's; a factory's is measured).
        num_frames, size: input frames and square side (a factory needs both).
        mean, std: RGB normalisation on the [0, 1] scale (default: the network's preset).
        class_names: file or URI with one class name per line.
        layer: the network's layer for layer-based methods (default: the registry's).
        seed: seed of freshly initialised weights.
        cache_dir: where downloaded / converted built-in weights are kept.
        weights_uri: the built-in weights file as the driver prepared it (a local path or a
            FileSystems URI, see ``ModelSpec.weights_file``): workers load it and fetch
            nothing. None: the worker resolves the built-in weights itself.
        weights_sha256: the SHA-256 that file must have (checked on the worker).
    """

    model: str = "tiny"
    checkpoint: str | None = None
    num_classes: int | None = None
    num_frames: int | None = None
    size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    class_names: str | None = None
    layer: str | None = None
    seed: int = 0
    cache_dir: str | None = None
    weights_uri: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class VideoModelHandler:
    """Builds the :class:`~transforms.scoring.Scorer` of a :class:`ModelConfig` on a worker.

    Attributes:
        config: the network and its weights.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``, resolved where the model loads.
        precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16`` (autocast), resolved likewise.
        threads: torch CPU threads per worker process (0: torch's default).
        filesystems: the pipeline's FileSystems options, set on the worker before the
            weights and class names are read.
    """

    config: ModelConfig
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    filesystems: FileSystemsOptions = NO_OPTIONS

    def spec(self) -> ModelSpec:
        """The network's spec with the configured preprocessing overrides applied."""
        return _spec(self.config)

    def class_names(self) -> list[str] | None:
        """Class names from ``config.class_names`` (a file) or the network's own list."""
        names = _class_names(self.config)
        return None if names is None else list(names)

    def build(self) -> tuple[nn.Module, str]:
        """The network on the CPU in eval mode with its weights, and their identity.

        Returns:
            (network, weights_sha256).
        """
        cfg, spec = self.config, self.spec()
        net = build_network(spec, cfg.num_classes, cfg.seed)
        if cfg.checkpoint:
            data = read_bytes(cfg.checkpoint, "--checkpoint")
            state = state_dict_from_bytes(data, cfg.checkpoint)
            load_state_dict_strict(net, state, cfg.checkpoint)
            sha = hashlib.sha256(data).hexdigest()
        elif cfg.weights_uri:
            sha = self._staged_weights(net, spec)
        else:
            sha = self._builtin_weights(net, spec)
        net.eval()
        if cfg.layer:
            try:
                net.get_submodule(cfg.layer)
            except AttributeError:
                raise ValueError(f"--layer {cfg.layer!r} is not a module of {spec.name}") from None
        return net, sha

    def _staged_weights(self, net: nn.Module, spec: ModelSpec) -> str:
        """Load the built-in weights from the file the driver prepared (never fetching)."""
        cfg = self.config
        assert spec.load_default_weights is not None and cfg.weights_uri
        try:
            with local_copy(cfg.weights_uri, "staged weights file") as path:
                sha = _sha256_file(path)
                if cfg.weights_sha256 and sha != cfg.weights_sha256:
                    raise ValueError(f"staged weights {cfg.weights_uri} have SHA-256 {sha}, "
                                     f"the driver prepared {cfg.weights_sha256}: the file "
                                     "changed after the run started")
                spec.load_default_weights(net, Path(path).parent)
        except OSError as exc:
            raise ValueError(str(exc)) from exc
        return sha

    def _builtin_weights(self, net: nn.Module, spec: ModelSpec) -> str:
        cache = None if self.config.cache_dir is None else Path(self.config.cache_dir)
        sha = spec.load_default_weights(net, cache) if spec.load_default_weights else None
        if sha:
            return sha
        log.warning("model %s runs with seeded RANDOM weights (seed %d): its explanations say "
                    "nothing about a trained network; pass --checkpoint for real results",
                    spec.name, self.config.seed)
        return f"random-seed-{self.config.seed}"

    def validate(self) -> str:
        """Driver-side check before any work: options, weights and class names fit.

        Builds the network on the CPU (so a bad checkpoint fails in one line, not on every
        worker) but resolves neither the device nor the precision: those depend on the worker.

        Returns:
            weights_sha256.
        """
        check_device_name(self.device)
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")
        _, sha = self.build()
        self.class_names()
        return sha

    def load_model(self) -> Scorer:
        """On the worker: threads, device, precision, network and weights → a Scorer."""
        self.filesystems.apply()
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        device = resolve_device(self.device)
        amp = resolve_precision(self.precision, device)
        net, sha = self.build()
        return Scorer(net, self.spec(), device, amp, self.class_names(), sha)

    def share_tag(self) -> str:
        """Key of the per-process cache (equal handlers share one network)."""
        return repr(dataclasses.astuple(self))


def _sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=16)
def _class_names(cfg: ModelConfig) -> tuple[str, ...] | None:
    """The class names of a configuration (cached: a --class-names URI is read once)."""
    if cfg.class_names:
        text = read_bytes(cfg.class_names, "--class-names").decode("utf-8")
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        n = _spec(cfg).num_classes
        if len(names) != n:
            raise ValueError(f"--class-names {cfg.class_names} has {len(names)} names but "
                             f"the network has {n} classes")
        return names
    spec = _spec(cfg)
    return tuple(spec.class_names()) if spec.class_names else None


@functools.lru_cache(maxsize=16)
def _spec(cfg: ModelConfig) -> ModelSpec:
    """The spec of a configuration (cached: a factory's spec costs a dry forward)."""
    if is_factory(cfg.model):
        if cfg.num_frames is None or cfg.size is None:
            raise ValueError(f"--model {cfg.model} is a factory: give --num-frames and --size "
                             "(and --mean/--std unless the Kinetics preset fits)")
        kwargs = {} if cfg.mean is None else {"mean": cfg.mean}
        if cfg.std is not None:
            kwargs["std"] = cfg.std
        return factory_spec(cfg.model, num_frames=cfg.num_frames, size=cfg.size,
                            num_classes=cfg.num_classes, layer=cfg.layer, **kwargs)
    spec = get_spec(cfg.model)
    changes: dict = {}
    if cfg.mean is not None:
        changes["mean"] = tuple(cfg.mean)
    if cfg.std is not None:
        changes["std"] = tuple(cfg.std)
    if cfg.num_classes is not None and cfg.num_classes != spec.num_classes:
        changes["num_classes"] = cfg.num_classes
        changes["class_names"] = None  # the network's own names describe other classes
    if cfg.layer is not None:
        changes["gradcam_layer"] = cfg.layer
    return dataclasses.replace(spec, **changes) if changes else spec
