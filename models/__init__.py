"""Pure-PyTorch video classifiers and their registry (never imports Beam)."""

from models.factory import factory_spec, is_factory, load_factory
from models.registry import (
    ModelSpec,
    available_models,
    build_model,
    build_network,
    get_spec,
    load_checkpoint,
    load_state_dict_strict,
    state_dict_from_bytes,
)

__all__ = [
    "ModelSpec",
    "available_models",
    "build_model",
    "build_network",
    "factory_spec",
    "get_spec",
    "is_factory",
    "load_checkpoint",
    "load_factory",
    "load_state_dict_strict",
    "state_dict_from_bytes",
]
