"""The PyTorch twin as a jax_vae.common Backend: trainer, checkpoint I/O and evaluation glue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from jax_vae.common.backends import Backend
from jax_vae.common.config.options import EvalOptions
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.errors import RunError
from jax_vae.common.weights.formats import config_of, is_safetensors, weights_path
from torch_reference.checkpoint import load_params as load_checkpoint
from torch_reference.checkpoint import save_params
from torch_reference.evaluate import evaluate as evaluate_params
from torch_reference.nn.models import VAE
from torch_reference.trainer import Trainer, device_name, process_index, resolve_device, set_threads
from torch_reference.weights import from_state_dict, load_safetensors, read_tensors


def load_params(path: Path, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(params, meta) of a model folder, a safetensors export, or a run folder / checkpoint / params
    export."""
    path = weights_path(path)
    if is_safetensors(path):
        if step is not None:
            raise RunError(f"{path} is a safetensors export (one set of weights); drop --step")
        return load_safetensors(path)
    return load_checkpoint(path, step)


def load(path: str | Path) -> tuple[VAEConfig, VAE]:
    """(config, VAE in eval mode) of a model folder, a safetensors export, a PyTorch export or a
    PyTorch run folder (its newest intact checkpoint)."""
    state, meta = load_params(Path(path))
    cfg = config_of(meta, Path(path))
    model = VAE(cfg)
    model.load_state_dict(state)
    return cfg, model.eval()


def evaluate(
    params: Any, x: np.ndarray, cfg: VAEConfig, binarization: str, opts: EvalOptions
) -> tuple[dict[str, Any], str]:
    """evaluate.evaluate of a state_dict on opts.device with a generator seeded opts.seed."""
    device = resolve_device(opts.device)
    set_threads(opts.threads)
    model = VAE(cfg)
    model.load_state_dict(params)
    model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(opts.seed)
    result = evaluate_params(model, x, generator, cfg, opts.k, opts.batch_size, opts.chunk, binarization)
    return result, device_name(device)


BACKEND = Backend(
    framework="torch",
    trainer=Trainer,
    process_index=process_index,
    load_params=load_params,
    save_params=save_params,
    evaluate=evaluate,
    read_tensors=read_tensors,
    from_state_dict=from_state_dict,
)
