"""Functional ELBO / IWAE objectives. Every term is per example, in nats unless the preset says.

Reduction over the batch happens once, in `loss_fn`, as the preset's `reduction` says.
Mirror of torch_reference/losses.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.functional import as_eps, std_from_scale
from jax_vae.linen.models import VAE

Array = jax.Array
TORCH_BCE_EPSILON = float(np.float32(1e-12))  # aten's EPSILON in BCE backward: a float 1e-12f
LOG_CLAMP = -100.0  # aten clamps each log term of BCE at -100
# Lua-torch nn.BCECriterion's eps (cunn: 1e-12f for float tensors, 1e-12 for double), added inside
# both logs in the tensor's own dtype: in float32, 1 - p + 1e-12 == 1 - p unless 1 - p < 2**-15.
LUA_BCE_EPSILON = 1e-12


@jax.custom_vjp
def _bce_elementwise(p: Array, x: Array) -> Array:
    """torch BCE: (x - 1) * max(log1p(-p), -100) - x * max(log p, -100), elementwise."""
    return (x - 1) * jnp.maximum(jnp.log1p(-p), LOG_CLAMP) - x * jnp.maximum(jnp.log(p), LOG_CLAMP)


def _bce_fwd(p: Array, x: Array):
    return _bce_elementwise(p, x), (p, x)


def _bce_bwd(res, g: Array):
    p, x = res
    # torch's own formula: dL/dp = (p - x) / max((1 - p) p, 1e-12); finite at p in {0, 1}.
    grad_p = g * (p - x) / jnp.maximum((1 - p) * p, TORCH_BCE_EPSILON)
    grad_x = g * (jnp.maximum(jnp.log1p(-p), LOG_CLAMP) - jnp.maximum(jnp.log(p), LOG_CLAMP))
    return grad_p, grad_x


_bce_elementwise.defvjp(_bce_fwd, _bce_bwd)


def _one_minus(p: Array) -> Array:
    """1 - p as its own rounding: max(1 - p, 0) is 1 - p on [0, 1] (Lua asserts p is there), and it
    keeps XLA from folding the 1e-12 added next into the 1 ((1 - p) + c becomes (1 + c) - p under jit,
    1 - p in float32: log(0) at p = 1)."""
    return jnp.maximum(1 - p, 0)


@jax.custom_vjp
def _lua_bce_elementwise(p: Array, x: Array) -> Array:
    """Lua BCECriterion: -(x log(p + 1e-12) + (1 - x) log(1 - p + 1e-12)), elementwise."""
    return -(x * jnp.log(p + LUA_BCE_EPSILON) + (1 - x) * jnp.log(_one_minus(p) + LUA_BCE_EPSILON))


def _lua_bce_fwd(p: Array, x: Array):
    return _lua_bce_elementwise(p, x), (p, x)


def _lua_bce_bwd(res, g: Array):
    p, x = res
    # the criterion's own backward, -(x - p) / ((1 - p + 1e-12)(p + 1e-12)): not the exact
    # derivative of the forward (that has 1 - p + 1e-12 and p + 1e-12 in separate terms).
    grad_p = (p - x) / ((_one_minus(p) + LUA_BCE_EPSILON) * (p + LUA_BCE_EPSILON)) * g
    grad_x = (jnp.log(_one_minus(p) + LUA_BCE_EPSILON) - jnp.log(p + LUA_BCE_EPSILON)) * g
    return grad_p, grad_x


_lua_bce_elementwise.defvjp(_lua_bce_fwd, _lua_bce_bwd)


def bce_probs(probs: Array, x: Array) -> Array:
    """-log Bernoulli(x | probs) summed over pixels, torch-clamped: [..., D] -> [...] nats."""
    return _bce_elementwise(probs, jnp.broadcast_to(x, probs.shape)).sum(-1)


def bce_lua(probs: Array, x: Array) -> Array:
    """-(x log(probs + 1e-12) + (1 - x) log(1 - probs + 1e-12)) summed over pixels, Lua-torch's
    BCECriterion in the input dtype, with its backward -(x - probs) / ((1 - probs + 1e-12)(probs + 1e-12)):
    [..., D] -> [...] nats."""
    return _lua_bce_elementwise(probs, jnp.broadcast_to(x, probs.shape)).sum(-1)


def bce_logits(logits: Array, x: Array) -> Array:
    """-log Bernoulli(x | sigmoid(logits)) = (1 - x) l - log_sigmoid(l), summed: [..., D] -> [...]."""
    return ((1 - x) * logits - jax.nn.log_sigmoid(logits)).sum(-1)


def mse_sum(outputs: Array, x: Array) -> Array:
    """sum_d (out_d - x_d)^2: [..., D] -> [...] (squared error, not nats)."""
    return jnp.square(outputs - x).sum(-1)


def mse_mean(outputs: Array, x: Array) -> Array:
    """mean_d (out_d - x_d)^2: [..., D] -> [...]."""
    return jnp.square(outputs - x).mean(-1)


LIKELIHOODS = {
    "bce_probs": bce_probs,
    "bce_lua": bce_lua,
    "bce_logits": bce_logits,
    "mse_sum": mse_sum,
    "mse_mean": mse_mean,
}


def kl_normal(mean: Array, scale: Array, scale_param: str) -> Array:
    """KL(N(mean, sigma^2) || N(0, 1)) = 0.5 sum(sigma^2 + mean^2 - 1 - log sigma^2): [B, Z] -> [B]."""
    if scale_param == "logvar":
        return 0.5 * (jnp.exp(scale) + jnp.square(mean) - 1.0 - scale).sum(-1)
    var = jnp.square(scale)
    return 0.5 * (var + jnp.square(mean) - 1.0 - jnp.log(var)).sum(-1)


def kl_day37(mean: Array, sigma: Array, input_dim: int) -> Array:
    """0.5 sum(mean^2 + sigma^2 - log(1e-8 + sigma^2) - 1) / D: [B, Z] -> [B] (day37 as printed)."""
    var = jnp.square(sigma)
    return 0.5 * (jnp.square(mean) + var - jnp.log(1e-8 + var) - 1.0).sum(-1) / input_dim


LOG_2PI = math.log(2.0 * math.pi)


def log_normal_pdf(sample: Array, mean: Array | float, logvar: Array | float) -> Array:
    """sum_z -0.5 ((sample - mean)^2 exp(-logvar) + logvar + log 2 pi), the TF CVAE tutorial's
    log_normal_pdf as written: [..., Z] -> [...] nats."""
    return (-0.5 * (jnp.square(sample - mean) * jnp.exp(-logvar) + logvar + LOG_2PI)).sum(-1)


def kl_monte_carlo(mean: Array, scale: Array, eps: Array, scale_param: str) -> Array:
    """log q(z|x) - log p(z) at z = eps exp(logvar / 2) + mean, averaged over the L samples (the
    single-sample estimate of KL(q || p) at L = 1): [B, Z] x2, eps [L, B, Z] -> [B] nats."""
    logvar = scale if scale_param == "logvar" else jnp.log(jnp.square(scale))  # [B, Z]
    z = eps * jnp.exp(logvar * 0.5) + mean  # [L, B, Z], the tutorial's reparameterize
    return (log_normal_pdf(z, mean, logvar) - log_normal_pdf(z, 0.0, 0.0)).mean(0)


def _kl_monte_carlo_term(mean: Array, scale: Array, cfg: VAEConfig, eps: Array | None) -> Array:
    if eps is None:
        raise ValueError("kl='monte_carlo' needs the eps of the sampled z")
    return kl_monte_carlo(mean, scale, eps, cfg.scale_param)


# The KL part of the objective, by VAEConfig.kl: (mean, scale [B, Z], cfg, eps [L, B, Z] or None) -> [B].
KL_TERMS: dict[str, Callable[[Array, Array, VAEConfig, Array | None], Array]] = {
    "analytic": lambda mean, scale, cfg, eps: kl_normal(mean, scale, cfg.scale_param),
    "day37": lambda mean, scale, cfg, eps: kl_day37(mean, scale, cfg.input_dim),
    "monte_carlo": _kl_monte_carlo_term,
}


def kl_term(mean: Array, scale: Array, cfg: VAEConfig, eps: Array | None = None) -> Array:
    """The preset's KL term per example: [B, Z] -> [B] (monte_carlo needs the eps [L, B, Z] of z)."""
    return KL_TERMS[cfg.kl](mean, scale, cfg, eps)


def log_weights(
    recon: Array, mean: Array, scale: Array, eps: Array, cfg: VAEConfig, beta: Array | float = 1.0
) -> Array:
    """log w = log p(x|z) + beta (log p(z) - log q(z|x)) per sample, z = mean + std eps: -> [L, B].

    beta = 1 is the importance weight of log p(x); beta < 1 (KL warm-up) tempers the prior/posterior
    ratio, so the one-sample bound is E[log p(x|z)] - beta KL. The 2 pi constants of p(z) and
    q(z|x) cancel; recon = -log p(x|z) [L, B].
    """
    std = std_from_scale(scale, cfg.scale_param)
    z = mean + std * eps  # [L, B, Z]
    log_pz = -0.5 * jnp.square(z).sum(-1)
    log_qz = -0.5 * jnp.square(eps).sum(-1) - jnp.log(std).sum(-1)
    return -recon + beta * (log_pz - log_qz)


def iwae_bound(log_w: Array) -> Array:
    """log (1/L) sum_l exp(log w_l), stable: [L, B] -> [B] nats."""
    return jax.scipy.special.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])


def elbo(
    recon_l: Array, kl: Array, mean: Array, scale: Array, eps: Array, cfg: VAEConfig, beta: Array | float
) -> Array:
    """-ELBO per example: E_q[-log p(x|z)] (the mean over the L samples) + beta KL: -> [B]."""
    return recon_l.mean(0) + beta * kl


def iwae(
    recon_l: Array, kl: Array, mean: Array, scale: Array, eps: Array, cfg: VAEConfig, beta: Array | float
) -> Array:
    """-IWAE bound per example: -log (1/L) sum_l w_l over the L samples: -> [B]."""
    return -iwae_bound(log_weights(recon_l, mean, scale, eps, cfg, beta))


# The objective part, by VAEConfig.objective: (recon [L, B], kl [B], mean, scale, eps, cfg, beta) -> [B].
OBJECTIVES = {"elbo": elbo, "iwae": iwae}


def objective(
    outputs: Array,
    mean: Array,
    scale: Array,
    x: Array,
    eps: Array,
    cfg: VAEConfig,
    beta: Array | float | None = None,
) -> tuple[Array, dict[str, Array]]:
    """(loss, metrics) from decoder outputs [L, B, D], posterior [B, Z] x2 and eps [L, B, Z]."""
    recon_l = LIKELIHOODS[cfg.likelihood](outputs, x)  # [L, B]
    kl = kl_term(mean, scale, cfg, eps)  # [B]
    recon = recon_l.mean(0)  # [B]
    beta = jnp.asarray(cfg.beta if beta is None else beta, recon.dtype)  # no float64 promotion
    per_example = OBJECTIVES[cfg.objective](recon_l, kl, mean, scale, eps, cfg, beta)  # [B]
    loss = per_example.sum() if cfg.reduction == "sum" else per_example.mean()
    logvar = scale if cfg.scale_param == "logvar" else jnp.log(jnp.square(scale))  # [B, Z]
    dev2 = jnp.square(logvar - logvar.mean(-1, keepdims=True)).sum(-1)  # [B] for step.latent_stats
    latent = {"mu_sum": mean.sum(-1), "logvar_sum": logvar.sum(-1), "logvar_dev2": dev2}
    return loss, {"recon": recon, "kl": kl, "per_example": per_example, **latent}


def loss_fn(
    params: dict,
    x: Array,
    eps_or_key: Array,
    cfg: VAEConfig,
    beta: Array | float | None = None,
    batch_stats: dict | None = None,
    train: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """(loss, metrics): the preset's objective reduced over the batch; metrics hold per-example
    recon [B] (mean over the L samples), kl [B], the per-example objective [B] and the per-example
    latent sums mu_sum, logvar_sum, logvar_dev2 [B] that step.latent_stats reduces. With BatchNorm
    (`batch_stats`): `train` normalizes with the batch statistics and returns the updated running
    ones as metrics['batch_stats']; train=False normalizes with the running ones."""
    eps = as_eps(eps_or_key, cfg, x.shape[0], x.dtype)  # [L, B, Z]
    model, updated = VAE(cfg), None
    out: Any  # flax types apply loosely
    if batch_stats is None:
        out = model.apply({"params": params}, x, eps)
    elif train:
        variables = {"params": params, "batch_stats": batch_stats}
        out, updated = model.apply(variables, x, eps, train=True, mutable=["batch_stats"])
    else:
        out = model.apply({"params": params, "batch_stats": batch_stats}, x, eps)
    outputs, mean, scale = out  # [L, B, D], [B, Z] x2
    loss, aux = objective(outputs, mean, scale, x, eps, cfg, beta)
    if updated is not None:
        aux["batch_stats"] = updated["batch_stats"]
    return loss, aux
