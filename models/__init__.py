"""Pure-PyTorch video classifiers and their registry (never imports Beam)."""

from models.registry import ModelSpec, available_models, build_model, get_spec, load_checkpoint

__all__ = ["ModelSpec", "available_models", "build_model", "get_spec", "load_checkpoint"]
