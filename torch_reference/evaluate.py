"""Test-set evaluation in nats per image: the negative ELBO and the IWAE-k log-likelihood estimate.

log p(x) ~= log (1/k) sum_j w_j,  w_j = p(x|z_j) p(z_j) / q(z_j|x),  z_j ~ q(z|x)   (Burda et al. 2016)
is a lower bound that tightens as k grows (the paper reports k = 5000). The k samples are drawn in
chunks; each chunk's logsumexp is kept ([n_chunks, B] floats) and reduced once at the end, so the
memory is O(batch * chunk * D) whatever k is. Mirror of jax_vae/evaluate.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jax_vae.common import evaluation
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.evaluation import check_evaluable, chunking, summarize
from torch_reference.functional import reparameterize, sample_eps, std_from_scale
from torch_reference.losses import LIKELIHOODS, kl_normal, log_weights
from torch_reference.nn.models import VAE
from torch_reference.trainer import NAN_PROBS_ERROR


def _chunked_stats(
    model: VAE, x: Tensor, eps_of: Callable[[int], Tensor], n_chunks: int, chunk: int, k: int, cfg: VAEConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """(log (1/k) sum_j w_j [B], mean_j -log p(x|z_j) [B], analytic KL [B]) over k samples.

    eps_of(i) -> eps [<=chunk, B, Z] of chunk i (the last chunk holds the k - i * chunk left over).
    """
    mean, scale = model.encode(x)  # [B, Z] x2
    std = std_from_scale(scale, cfg.scale_param)
    recon_sum = torch.zeros(x.shape[:1], dtype=x.dtype, device=x.device)
    lse = []
    for i in range(n_chunks):
        eps = eps_of(i)  # [C, B, Z]
        outputs = model.decode(reparameterize(mean, std, eps))  # [C, B, D]
        recon_l = _recon(outputs, x, cfg)  # [C, B]
        log_w = log_weights(recon_l, mean, scale, eps, cfg)  # [C, B]
        lse.append(torch.logsumexp(log_w, dim=0))  # [B]
        recon_sum = recon_sum + recon_l.sum(0)
    log_px = torch.logsumexp(torch.stack(lse), dim=0) - math.log(k)  # [B]
    # the analytic KL for analytic and monte_carlo presets alike (check_evaluable): the exact
    # expectation that a monte_carlo preset trains on one-sample estimates of
    return log_px, recon_sum / k, kl_normal(mean, scale, cfg.scale_param)


def _recon(outputs: Tensor, x: Tensor, cfg: VAEConfig) -> Tensor:
    """-log p(x|z) per sample, [C, B, D] -> [C, B] nats; NaN for a NaN decoder output (diverged
    weights), as in JAX, where torch's BCE of NaN probabilities raises."""
    try:
        return LIKELIHOODS[cfg.likelihood](outputs, x)
    except RuntimeError as err:
        if NAN_PROBS_ERROR not in str(err):
            raise
        bad = outputs.isnan().any(-1)  # [C, B]
        return LIKELIHOODS[cfg.likelihood](outputs.nan_to_num(0.5), x).masked_fill(bad, math.nan)


def log_likelihood_from_eps(
    model: VAE, x: Tensor, eps: Tensor, cfg: VAEConfig, chunk: int | None = None
) -> Tensor:
    """log (1/K) sum_k w_k for injected eps [K, B, Z], K split into chunks: x [B, D] -> [B] nats."""
    check_evaluable(cfg)
    k = eps.shape[0]
    n_chunks, chunk = chunking(k, x.shape[0], chunk)
    eps_of = lambda i: eps[i * chunk : (i + 1) * chunk]
    return _chunked_stats(model, x, eps_of, n_chunks, chunk, k, cfg)[0]


def _batch_stats(
    model: VAE, x: Tensor, generator: torch.Generator | None, cfg: VAEConfig, k: int, chunk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """_chunked_stats with eps of each chunk drawn in turn from `generator`."""
    n_chunks = -(-k // chunk)
    eps_of = lambda i: sample_eps(
        generator, cfg, x.shape[0], min(chunk, k - i * chunk), dtype=x.dtype, device=x.device
    )
    return _chunked_stats(model, x, eps_of, n_chunks, chunk, k, cfg)


@torch.inference_mode()
def per_image_stats(
    model: VAE,
    data: Tensor | np.ndarray,
    generator: torch.Generator | None,
    cfg: VAEConfig,
    k: int = 5000,
    batch_size: int = 100,
    chunk: int | None = None,
) -> dict[str, np.ndarray]:
    """{'log_px', 'recon', 'kl'} [N] nats for data [N, D], in image batches; eps from `generator`."""
    check_evaluable(cfg)
    param = next(model.parameters())
    data = torch.as_tensor(data).to(dtype=param.dtype, device=param.device)
    n = data.shape[0]
    batch_size = min(batch_size, n)
    budget = evaluation.CPU_EAGER_ROW_BUDGET if data.device.type == "cpu" else evaluation.ROW_BUDGET
    _, chunk = chunking(k, batch_size, chunk, budget)
    out: dict[str, list] = {"log_px": [], "recon": [], "kl": []}
    for start in range(0, n, batch_size):
        x = data[start : start + batch_size]  # [<=B, D]
        for name, value in zip(out, _batch_stats(model, x, generator, cfg, k, chunk)):
            out[name].append(value.cpu().numpy())
    return {name: np.concatenate(v) for name, v in out.items()}


def log_likelihood_estimate(
    model: VAE,
    data: Tensor | np.ndarray,
    generator: torch.Generator | None,
    cfg: VAEConfig,
    k: int = 5000,
    batch_size: int = 100,
    chunk: int | None = None,
) -> np.ndarray:
    """IWAE-k estimate of log p(x) for every image: data [N, D] -> [N] nats (a lower bound in expectation)."""
    return per_image_stats(model, data, generator, cfg, k, batch_size, chunk)["log_px"]


def evaluate(
    model: VAE,
    data: Tensor | np.ndarray,
    generator: torch.Generator | None,
    cfg: VAEConfig,
    k: int = 5000,
    batch_size: int = 100,
    chunk: int | None = None,
    binarization: str = "none",
) -> dict[str, Any]:
    """Test negative ELBO (k-sample reconstruction + analytic KL, beta = 1) and IWAE-k NLL, nats/image."""
    stats = per_image_stats(model, data, generator, cfg, k, batch_size, chunk)
    return summarize(stats, k, binarization, cfg)
