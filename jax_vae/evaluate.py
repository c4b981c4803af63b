"""Test-set evaluation in nats per image: the negative ELBO and the IWAE-k log-likelihood estimate.

log p(x) ~= log (1/k) sum_j w_j,  w_j = p(x|z_j) p(z_j) / q(z_j|x),  z_j ~ q(z|x)   (Burda et al. 2016)
is a lower bound that tightens as k grows (the paper reports k = 5000). The k samples are drawn in
chunks; each chunk's logsumexp is kept ([n_chunks, B] floats) and reduced once at the end, so the
memory is O(batch * chunk * D) whatever k is. Mirror of torch_reference/evaluate.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.evaluation import check_evaluable, chunking, summarize
from jax_vae.functional import reparameterize, sample_eps, std_from_scale
from jax_vae.linen.models import VAE, variables
from jax_vae.losses import LIKELIHOODS, kl_normal, log_weights

Array = jax.Array


def _chunked_stats(
    params: dict,
    x: Array,
    eps_of: Callable[[Array], Array],
    n_chunks: int,
    chunk: int,
    k: int,
    cfg: VAEConfig,
) -> tuple[Array, Array, Array]:
    """(log (1/k) sum_j w_j [B], mean_j -log p(x|z_j) [B], analytic KL [B]) over k samples.

    eps_of(i) -> eps [chunk, B, Z] of chunk i; samples with index >= k are masked out.
    """
    model = VAE(cfg)
    encoded: Any = model.apply(variables(params, cfg), x, method=VAE.encode)  # flax types apply loosely
    mean, scale = encoded  # [B, Z] x2
    std = std_from_scale(scale, cfg.scale_param)

    def body(recon_sum: Array, i: Array) -> tuple[Array, Array]:
        eps = eps_of(i)  # [C, B, Z]
        outputs: Any = model.apply(
            variables(params, cfg), reparameterize(mean, std, eps), method=VAE.decode
        )  # [C, B, D]
        recon_l = LIKELIHOODS[cfg.likelihood](outputs, x)  # [C, B]
        log_w = log_weights(recon_l, mean, scale, eps, cfg)  # [C, B]
        valid = (i * chunk + jnp.arange(chunk) < k)[:, None]  # [C, 1]
        lse = jax.scipy.special.logsumexp(jnp.where(valid, log_w, -jnp.inf), axis=0)  # [B]
        return recon_sum + jnp.where(valid, recon_l, 0.0).sum(0), lse

    recon_sum, lse = jax.lax.scan(body, jnp.zeros(x.shape[:1], x.dtype), jnp.arange(n_chunks))
    log_px = jax.scipy.special.logsumexp(lse, axis=0) - math.log(k)  # [B]
    # the analytic KL for analytic and monte_carlo presets alike (check_evaluable): the exact
    # expectation that a monte_carlo preset trains on one-sample estimates of
    return log_px, recon_sum / k, kl_normal(mean, scale, cfg.scale_param)


def log_likelihood_from_eps(
    params: dict, x: Array, eps: Array, cfg: VAEConfig, chunk: int | None = None
) -> Array:
    """log (1/K) sum_k w_k for injected eps [K, B, Z], K split into chunks: x [B, D] -> [B] nats."""
    check_evaluable(cfg)
    k = eps.shape[0]
    n_chunks, chunk = chunking(k, x.shape[0], chunk)
    padded = jnp.pad(eps, ((0, n_chunks * chunk - k), (0, 0), (0, 0)))  # [n*C, B, Z]
    eps_of = lambda i: jax.lax.dynamic_slice_in_dim(padded, i * chunk, chunk, axis=0)
    return _chunked_stats(params, x, eps_of, n_chunks, chunk, k, cfg)[0]


@functools.partial(jax.jit, static_argnames=("cfg", "k", "chunk"))
def _batch_stats(
    params: dict, x: Array, key: Array, cfg: VAEConfig, k: int, chunk: int
) -> tuple[Array, Array, Array]:
    """_chunked_stats with eps of chunk i drawn from fold_in(key, i); compiled once per shape."""
    n_chunks = -(-k // chunk)
    eps_of = lambda i: sample_eps(jax.random.fold_in(key, i), cfg, x.shape[0], chunk, x.dtype)
    return _chunked_stats(params, x, eps_of, n_chunks, chunk, k, cfg)


def per_image_stats(
    params: dict,
    data: Array | np.ndarray,
    key: Array,
    cfg: VAEConfig,
    k: int = 5000,
    batch_size: int = 100,
    chunk: int | None = None,
) -> dict[str, np.ndarray]:
    """{'log_px', 'recon', 'kl'} [N] nats for data [N, D], in image batches (last one zero-padded);
    batch b draws its eps from fold_in(key, b)."""
    check_evaluable(cfg)
    images = np.asarray(data, jax.tree_util.tree_leaves(params)[0].dtype)
    n = images.shape[0]
    batch_size = min(batch_size, n)
    _, chunk = chunking(k, batch_size, chunk)
    out: dict[str, list] = {"log_px": [], "recon": [], "kl": []}
    for b, start in enumerate(range(0, n, batch_size)):
        rows = min(batch_size, n - start)
        x = np.pad(images[start : start + rows], ((0, batch_size - rows), (0, 0)))  # [B, D], zero-padded
        stats = _batch_stats(params, jnp.asarray(x), jax.random.fold_in(key, b), cfg, k, chunk)
        for name, value in zip(out, stats):
            out[name].append(np.asarray(value)[:rows])
    return {name: np.concatenate(v) for name, v in out.items()}


def log_likelihood_estimate(
    params: dict,
    data: Array | np.ndarray,
    key: Array,
    cfg: VAEConfig,
    k: int = 5000,
    batch_size: int = 100,
    chunk: int | None = None,
) -> np.ndarray:
    """IWAE-k estimate of log p(x) for every image: data [N, D] -> [N] nats (a lower bound in expectation)."""
    return per_image_stats(params, data, key, cfg, k, batch_size, chunk)["log_px"]


def evaluate(
    params: dict,
    data: Array | np.ndarray,
    key: Array,
    cfg: VAEConfig,
    k: int = 5000,
    batch_size: int = 100,
    chunk: int | None = None,
    binarization: str = "none",
) -> dict[str, Any]:
    """Test negative ELBO (k-sample reconstruction + analytic KL, beta = 1) and IWAE-k NLL, nats/image."""
    stats = per_image_stats(params, data, key, cfg, k, batch_size, chunk)
    return summarize(stats, k, binarization, cfg)
