"""The PyTorch twin as a jax_vae.common Backend: trainer, checkpoint I/O and evaluation glue."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from jax_vae.common.backends import Backend
from jax_vae.common.config import VAEConfig
from jax_vae.common.evaluation import EvalOptions
from torch_reference.checkpoint import load_params, save_params
from torch_reference.evaluate import evaluate as evaluate_params
from torch_reference.models import VAE
from torch_reference.train import Trainer, _set_threads, device_name, process_index, resolve_device


def evaluate(
    params: Any, x: np.ndarray, cfg: VAEConfig, binarization: str, opts: EvalOptions
) -> tuple[dict[str, Any], str]:
    """evaluate.evaluate of a state_dict on opts.device with a generator seeded opts.seed."""
    device = resolve_device(opts.device)
    _set_threads(opts.threads)
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
)
