"""The only place that names both twins: a framework name -> its Backend, imported on demand.

Each twin's `backend.py` builds one `Backend` from its own modules; the CLI, `loop.train`, evaluation
and export reach a framework only through it, so `jax_vae.common` never imports jax or torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jax_vae.common.config import VAEConfig

if TYPE_CHECKING:  # loop imports this module; the Protocol is for the checker
    from jax_vae.common.loop import Trainer

FRAMEWORKS = ("jax", "torch")
PACKAGES = {"jax": "jax_vae", "torch": "torch_reference"}


@dataclasses.dataclass(frozen=True)
class Backend:
    """What a twin offers the framework-free code.

    trainer(cfg, data, opts, checkpoint_dir, tick) -> loop.Trainer;
    load_params(path, step) -> (params in the twin's layout, meta); save_params(path, params, meta);
    evaluate(params, x [N, D], cfg, binarization, opts) -> (evaluation.summarize's dict, device name);
    start_distributed(coordinator, num_processes, process_id): multi-process runs (data_parallel only);
    read_tensors(path) -> {key: numpy array} of a framework-native file (JAX: an orbax folder, PyTorch: a
    torch.save file) for jax_vae.common.sources; from_state_dict(state, cfg) -> params in the twin's layout
    from jax-vae's PyTorch-layout state_dict of numpy arrays.
    """

    framework: str
    trainer: Callable[..., Trainer]
    process_index: Callable[[], int]
    load_params: Callable[[Path, int | None], tuple[Any, dict[str, Any]]]
    save_params: Callable[[Path, Any, dict[str, Any]], None]
    evaluate: Callable[[Any, np.ndarray, VAEConfig, str, Any], tuple[dict[str, Any], str]]
    read_tensors: Callable[[Path], dict[str, np.ndarray]]
    from_state_dict: Callable[[dict[str, np.ndarray], VAEConfig], Any]
    data_parallel: bool = False
    start_distributed: Callable[[str | None, int | None, int | None], bool] | None = None


def get(framework: str) -> Backend:
    """The Backend of `framework` ('jax' or 'torch'), importing that twin only now."""
    if framework not in PACKAGES:
        raise ValueError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")
    backend = importlib.import_module(f"{PACKAGES[framework]}.backend").BACKEND
    assert isinstance(backend, Backend) and backend.framework == framework
    return backend


def command(framework: str) -> str:
    """The CLI of a framework, for messages: `python -m jax_vae` or `python -m torch_reference`."""
    return f"python -m {PACKAGES[framework]}"
