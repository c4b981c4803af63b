"""The PyTorch twin of jax_vae: the same files, names and parameters (tests/layout/test_architecture.py).

The public face (docs/api.md): the names below are stable and load on first use (PEP 562), so
`import torch_reference` costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_PUBLIC = {
    "load": "torch_reference.backend",
    "VAE": "torch_reference.nn.models",
    "init_params": "torch_reference.nn.models",
    "loss_fn": "torch_reference.losses",
    "make_optimizer": "torch_reference.optim",
    "TrainState": "torch_reference.step",
    "create_state": "torch_reference.step",
    "make_train_step": "torch_reference.step",
    "sample_eps": "torch_reference.functional",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'torch_reference' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
