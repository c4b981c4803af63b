"""The seam between the framework-free code and each framework: the `Trainer` Protocol, the typed
`Backend`, and the one place that names both twins (a framework name -> its Backend, imported on demand).

Each twin's `backend.py` builds one `Backend` from its own modules; the CLI, `loop.train`, evaluation
and export reach a framework only through it, so `jax_vae.common` never imports jax or torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np

from jax_vae.common.config.options import EvalOptions, Tick, TrainOptions
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.errors import RunError
from jax_vae.common.metrics import StepMetrics

FRAMEWORKS = ("jax", "torch")
PACKAGES = {"jax": "jax_vae", "torch": "torch_reference"}
# A framework's missing package -> how to install it (the PyTorch side is the `torch` extra).
INSTALL = {
    "torch": "pip install 'jax-vae[torch]'",
    "jax": "pip install jax-vae",
    "jaxlib": "pip install jax-vae",
}

# A twin's weights: JAX, the Flax params tree (with BatchNorm {"params", "batch_stats"}) of arrays;
# PyTorch, a state_dict {dotted key: Tensor}. Framework-free code passes them through without looking in.
Weights: TypeAlias = dict[str, Any]
Meta: TypeAlias = dict[str, Any]  # what a checkpoint or export records beside its weights (JSON)
Tensors: TypeAlias = dict[str, np.ndarray]  # flat {key: array} of a weight file, any framework's layout
Data: TypeAlias = dict[str, np.ndarray]  # {"train": [N, D], "test": [M, D]} float32 in [0, 1]


class Trainer(Protocol):
    """What a framework implements for `train`: device data, state, compiled steps, checkpoints."""

    framework: str
    checkpoint_dir: Path

    def versions(self) -> dict[str, str]: ...
    def device_name(self) -> str: ...
    def init_state(self, params: Weights | None = None) -> None: ...
    def latest_checkpoint(self) -> int | None: ...
    def checkpoint_config(self, step: int | None = None) -> dict[str, Any]: ...
    def restore(self, step: int | None = None) -> tuple[np.ndarray, dict[str, Any]]: ...
    def save(self, step: int, order: np.ndarray, meta: dict[str, Any]) -> None: ...
    def set_epoch(self, epoch: int) -> None: ...
    def compile(self, num_steps: int, batch_size: int) -> float: ...
    def run_chunk(self, idx: np.ndarray) -> StepMetrics[np.ndarray]: ...
    def evaluate(self) -> dict[str, float]: ...
    def decode(self, z: np.ndarray) -> np.ndarray: ...
    def reconstruct(self, x: np.ndarray) -> np.ndarray: ...
    def close(self) -> None: ...


class TrainerFactory(Protocol):
    """A Trainer's constructor: (cfg, data, opts, checkpoint_dir, tick) -> Trainer."""

    def __call__(
        self, cfg: VAEConfig, data: Data, opts: TrainOptions, checkpoint_dir: Path, tick: Tick | None = None
    ) -> Trainer: ...


@dataclasses.dataclass(frozen=True)
class Backend:
    """What a twin offers the framework-free code.

    trainer: builds the Trainer of a run; process_index: 0 on the process that writes the run folder;
    load_params(path, step) -> (weights, meta) of a run folder, checkpoint, params export or safetensors
    file; save_params(path, weights, meta); evaluate(weights, x [N, D], cfg, binarization, opts) ->
    (evaluation.summarize's dict, device name); read_tensors(path) -> the flat tensors of a
    framework-native file (JAX: an orbax folder, PyTorch: a torch.save file) for
    jax_vae.common.weights.sources; from_state_dict(state, cfg) -> weights in the twin's layout from
    jax-vae's PyTorch-layout state_dict of numpy arrays; start_distributed(coordinator, num_processes,
    process_id) -> whether multi-process was started (data_parallel twins only).
    """

    framework: str
    trainer: TrainerFactory
    process_index: Callable[[], int]
    load_params: Callable[[Path, int | None], tuple[Weights, Meta]]
    save_params: Callable[[Path, Weights, Meta], None]
    evaluate: Callable[[Weights, np.ndarray, VAEConfig, str, EvalOptions], tuple[dict[str, Any], str]]
    read_tensors: Callable[[Path], Tensors]
    from_state_dict: Callable[[Tensors, VAEConfig], Weights]
    data_parallel: bool = False
    start_distributed: Callable[[str | None, int | None, int | None], bool] | None = None


def get(framework: str) -> Backend:
    """The Backend of `framework` ('jax' or 'torch'), importing that twin only now."""
    if framework not in PACKAGES:
        raise ValueError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")
    try:
        backend = importlib.import_module(f"{PACKAGES[framework]}.backend").BACKEND
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing in INSTALL:
            raise RunError(f"this needs {missing}, which is not installed: {INSTALL[missing]}") from None
        raise
    assert isinstance(backend, Backend) and backend.framework == framework
    return backend


def command(framework: str) -> str:
    """The CLI of a framework, for messages: `python -m jax_vae` or `python -m torch_reference`."""
    return f"python -m {PACKAGES[framework]}"
