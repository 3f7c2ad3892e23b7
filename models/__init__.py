"""Pure-PyTorch video classifiers and their registry (never imports Beam).

The package's names load lazily (PEP 562): ``models.catalog`` (the names and descriptions
``--list-models`` prints) must not pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelSpec": "models.registry", "available_models": "models.registry",
    "build_model": "models.registry", "build_network": "models.registry",
    "get_spec": "models.registry", "load_checkpoint": "models.registry",
    "load_state_dict_strict": "models.registry", "state_dict_from_bytes": "models.registry",
    "factory_spec": "models.factory", "is_factory": "models.factory",
    "load_factory": "models.factory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
