"""jax-vae: jit-compiled Flax VAEs (Linen and NNX) with PyTorch twins, a parity suite and benchmarks.

The public face (docs/api.md): the names below are stable. They load on first use (PEP 562), so
`import jax_vae` costs nothing and the framework-free core never pulls in jax or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it (the one import path each name has)
_PUBLIC = {
    # what a run is
    "VAEConfig": "jax_vae.common.config.vae_config",
    "apply_overrides": "jax_vae.common.config.vae_config",
    "PRESETS": "jax_vae.common.config.presets",
    "get_preset": "jax_vae.common.config.presets",
    "TrainOptions": "jax_vae.common.config.options",
    "EvalOptions": "jax_vae.common.config.options",
    # running it, in either framework
    "Backend": "jax_vae.common.backends",
    "Trainer": "jax_vae.common.backends",
    "get_backend": "jax_vae.common.backends",
    "train": "jax_vae.common.training.loop",
    "evaluate_run": "jax_vae.common.evaluation",
    "load_dataset": "jax_vae.common.data.datasets",
    "load": "jax_vae.backend",
    # the JAX model, loss, optimizer and step (these import jax)
    "VAE": "jax_vae.linen.models",
    "init_params": "jax_vae.linen.models",
    "loss_fn": "jax_vae.losses",
    "make_optimizer": "jax_vae.optim",
    "TrainState": "jax_vae.step",
    "create_state": "jax_vae.step",
    "make_train_step": "jax_vae.step",
    "sample_eps": "jax_vae.functional",
}
_RENAMED = {"get_backend": "get"}  # public name -> the name in its module
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'jax_vae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), _RENAMED.get(name, name))
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
