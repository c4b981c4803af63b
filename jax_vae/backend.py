"""The JAX twin as a jax_vae.common Backend: trainer, checkpoint I/O and evaluation glue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_vae.checkpoint import load_params as load_checkpoint
from jax_vae.checkpoint import save_params
from jax_vae.common.backends import Backend
from jax_vae.common.config.options import EvalOptions
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.errors import RunError
from jax_vae.common.weights.formats import config_of, is_safetensors, weights_path
from jax_vae.evaluate import evaluate as evaluate_params
from jax_vae.parallel import initialize_distributed
from jax_vae.trainer import Trainer, device_name, process_index, resolve_device
from jax_vae.weights import from_state_dict, load_safetensors, read_tensors


def load_params(path: Path, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(params, meta) of a model folder, a safetensors export, or a run folder / checkpoint / params
    export."""
    path = weights_path(path)
    if is_safetensors(path):
        if step is not None:
            raise RunError(f"{path} is a safetensors export (one set of weights); drop --step")
        return load_safetensors(path)
    return load_checkpoint(path, step)


def load(path: str | Path) -> tuple[VAEConfig, dict[str, Any]]:
    """(config, Flax weights) of a model folder, a safetensors export, a params folder or a JAX run
    folder (its newest intact checkpoint): the weights are the params tree, with BatchNorm
    {"params", "batch_stats"} (linen.models.variables of them is what VAE(cfg).apply takes)."""
    weights, meta = load_params(Path(path))
    return config_of(meta, Path(path)), jax.tree_util.tree_map(jnp.asarray, weights)


def evaluate(
    params: Any, x: np.ndarray, cfg: VAEConfig, binarization: str, opts: EvalOptions
) -> tuple[dict[str, Any], str]:
    """evaluate.evaluate of numpy params on opts.device with the key jax.random.key(opts.seed)."""
    device = resolve_device(opts.device)
    params = jax.device_put(jax.tree_util.tree_map(jnp.asarray, params), device)
    with jax.default_device(device):
        result = evaluate_params(
            params, x, jax.random.key(opts.seed), cfg, opts.k, opts.batch_size, opts.chunk, binarization
        )
    return result, device_name(device)


BACKEND = Backend(
    framework="jax",
    trainer=Trainer,
    process_index=process_index,
    load_params=load_params,
    save_params=save_params,
    evaluate=evaluate,
    read_tensors=read_tensors,
    from_state_dict=from_state_dict,
    data_parallel=True,
    start_distributed=initialize_distributed,
)
