"""Functional ELBO / IWAE objectives. Every term is per example, in nats unless the preset says.

Reduction over the batch happens once, in `loss_fn`, as the preset's `reduction` says.
Mirror of jax_vae/losses.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from jax_vae.common.config.vae_config import VAEConfig
from torch_reference.functional import as_eps, std_from_scale
from torch_reference.nn.models import VAE

# Lua-torch nn.BCECriterion's eps (cunn: 1e-12f for float tensors, 1e-12 for double), added inside
# both logs in the tensor's own dtype: in float32, 1 - p + 1e-12 == 1 - p unless 1 - p < 2**-15.
LUA_BCE_EPSILON = 1e-12


class _LuaBCE(torch.autograd.Function):
    """Lua BCECriterion elementwise, -(x log(p + 1e-12) + (1 - x) log(1 - p + 1e-12)), with the
    criterion's own backward."""

    @staticmethod
    def forward(ctx, p: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(p, x)
        # eager torch (and torch.compile) add 1e-12 to the rounded 1 - p as written; XLA needs a guard
        # against folding it into the 1 (the JAX twin's _one_minus)
        return -(x * torch.log(p + LUA_BCE_EPSILON) + (1 - x) * torch.log((1 - p) + LUA_BCE_EPSILON))

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None]:
        p, x = ctx.saved_tensors
        grad_p = grad_x = None
        if ctx.needs_input_grad[0]:
            # -(x - p) / ((1 - p + 1e-12)(p + 1e-12)): not the exact derivative of the forward
            grad_p = (p - x) / (((1 - p) + LUA_BCE_EPSILON) * (p + LUA_BCE_EPSILON)) * g
        if ctx.needs_input_grad[1]:
            grad_x = (torch.log((1 - p) + LUA_BCE_EPSILON) - torch.log(p + LUA_BCE_EPSILON)) * g
        return grad_p, grad_x


def bce_probs(probs: Tensor, x: Tensor) -> Tensor:
    """-log Bernoulli(x | probs) summed over pixels, torch-clamped: [..., D] -> [...] nats."""
    return F.binary_cross_entropy(probs, x.expand_as(probs), reduction="none").sum(-1)


def bce_lua(probs: Tensor, x: Tensor) -> Tensor:
    """-(x log(probs + 1e-12) + (1 - x) log(1 - probs + 1e-12)) summed over pixels, Lua-torch's
    BCECriterion in the input dtype, with its backward -(x - probs) / ((1 - probs + 1e-12)(probs + 1e-12)):
    [..., D] -> [...] nats."""
    out: Tensor = _LuaBCE.apply(probs, x.expand_as(probs))
    return out.sum(-1)


def bce_logits(logits: Tensor, x: Tensor) -> Tensor:
    """-log Bernoulli(x | sigmoid(logits)) = (1 - x) l - log_sigmoid(l), summed: [..., D] -> [...]."""
    return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def mse_sum(outputs: Tensor, x: Tensor) -> Tensor:
    """sum_d (out_d - x_d)^2: [..., D] -> [...] (squared error, not nats)."""
    return F.mse_loss(outputs, x.expand_as(outputs), reduction="none").sum(-1)


def mse_mean(outputs: Tensor, x: Tensor) -> Tensor:
    """mean_d (out_d - x_d)^2: [..., D] -> [...]."""
    return F.mse_loss(outputs, x.expand_as(outputs), reduction="none").mean(-1)


LIKELIHOODS = {
    "bce_probs": bce_probs,
    "bce_lua": bce_lua,
    "bce_logits": bce_logits,
    "mse_sum": mse_sum,
    "mse_mean": mse_mean,
}


def kl_normal(mean: Tensor, scale: Tensor, scale_param: str) -> Tensor:
    """KL(N(mean, sigma^2) || N(0, 1)) = 0.5 sum(sigma^2 + mean^2 - 1 - log sigma^2): [B, Z] -> [B]."""
    if scale_param == "logvar":
        return 0.5 * (torch.exp(scale) + mean.square() - 1.0 - scale).sum(-1)
    var = scale.square()
    return 0.5 * (var + mean.square() - 1.0 - torch.log(var)).sum(-1)


def kl_day37(mean: Tensor, sigma: Tensor, input_dim: int) -> Tensor:
    """0.5 sum(mean^2 + sigma^2 - log(1e-8 + sigma^2) - 1) / D: [B, Z] -> [B] (day37 as printed)."""
    var = sigma.square()
    return 0.5 * (mean.square() + var - torch.log(1e-8 + var) - 1.0).sum(-1) / input_dim


LOG_2PI = math.log(2.0 * math.pi)


def log_normal_pdf(sample: Tensor, mean: Tensor | float, logvar: Tensor | float) -> Tensor:
    """sum_z -0.5 ((sample - mean)^2 exp(-logvar) + logvar + log 2 pi), the TF CVAE tutorial's
    log_normal_pdf as written: [..., Z] -> [...] nats."""
    logvar_t = torch.as_tensor(logvar, dtype=sample.dtype, device=sample.device)
    return (-0.5 * ((sample - mean).square() * torch.exp(-logvar_t) + logvar_t + LOG_2PI)).sum(-1)


def kl_monte_carlo(mean: Tensor, scale: Tensor, eps: Tensor, scale_param: str) -> Tensor:
    """log q(z|x) - log p(z) at z = eps exp(logvar / 2) + mean, averaged over the L samples (the
    single-sample estimate of KL(q || p) at L = 1): [B, Z] x2, eps [L, B, Z] -> [B] nats."""
    logvar = scale if scale_param == "logvar" else torch.log(scale.square())  # [B, Z]
    z = eps * torch.exp(logvar * 0.5) + mean  # [L, B, Z], the tutorial's reparameterize
    return (log_normal_pdf(z, mean, logvar) - log_normal_pdf(z, 0.0, 0.0)).mean(0)


def _kl_monte_carlo_term(mean: Tensor, scale: Tensor, cfg: VAEConfig, eps: Tensor | None) -> Tensor:
    if eps is None:
        raise ValueError("kl='monte_carlo' needs the eps of the sampled z")
    return kl_monte_carlo(mean, scale, eps, cfg.scale_param)


# The KL part of the objective, by VAEConfig.kl: (mean, scale [B, Z], cfg, eps [L, B, Z] or None) -> [B].
KL_TERMS: dict[str, Callable[[Tensor, Tensor, VAEConfig, Tensor | None], Tensor]] = {
    "analytic": lambda mean, scale, cfg, eps: kl_normal(mean, scale, cfg.scale_param),
    "day37": lambda mean, scale, cfg, eps: kl_day37(mean, scale, cfg.input_dim),
    "monte_carlo": _kl_monte_carlo_term,
}


def kl_term(mean: Tensor, scale: Tensor, cfg: VAEConfig, eps: Tensor | None = None) -> Tensor:
    """The preset's KL term per example: [B, Z] -> [B] (monte_carlo needs the eps [L, B, Z] of z)."""
    return KL_TERMS[cfg.kl](mean, scale, cfg, eps)


def log_weights(
    recon: Tensor, mean: Tensor, scale: Tensor, eps: Tensor, cfg: VAEConfig, beta: Tensor | float = 1.0
) -> Tensor:
    """log w = log p(x|z) + beta (log p(z) - log q(z|x)) per sample, z = mean + std eps: -> [L, B].

    beta = 1 is the importance weight of log p(x); beta < 1 (KL warm-up) tempers the prior/posterior
    ratio, so the one-sample bound is E[log p(x|z)] - beta KL. The 2 pi constants of p(z) and
    q(z|x) cancel; recon = -log p(x|z) [L, B].
    """
    std = std_from_scale(scale, cfg.scale_param)
    z = mean + std * eps  # [L, B, Z]
    log_pz = -0.5 * z.square().sum(-1)
    log_qz = -0.5 * eps.square().sum(-1) - torch.log(std).sum(-1)
    return -recon + beta * (log_pz - log_qz)


def iwae_bound(log_w: Tensor) -> Tensor:
    """log (1/L) sum_l exp(log w_l), stable: [L, B] -> [B] nats."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def elbo(
    recon_l: Tensor,
    kl: Tensor,
    mean: Tensor,
    scale: Tensor,
    eps: Tensor,
    cfg: VAEConfig,
    beta: Tensor | float,
) -> Tensor:
    """-ELBO per example: E_q[-log p(x|z)] (the mean over the L samples) + beta KL: -> [B]."""
    return recon_l.mean(0) + beta * kl


def iwae(
    recon_l: Tensor,
    kl: Tensor,
    mean: Tensor,
    scale: Tensor,
    eps: Tensor,
    cfg: VAEConfig,
    beta: Tensor | float,
) -> Tensor:
    """-IWAE bound per example: -log (1/L) sum_l w_l over the L samples: -> [B]."""
    return -iwae_bound(log_weights(recon_l, mean, scale, eps, cfg, beta))


# The objective part, by VAEConfig.objective: (recon [L, B], kl [B], mean, scale, eps, cfg, beta) -> [B].
OBJECTIVES = {"elbo": elbo, "iwae": iwae}


def objective(
    outputs: Tensor,
    mean: Tensor,
    scale: Tensor,
    x: Tensor,
    eps: Tensor,
    cfg: VAEConfig,
    beta: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """(loss, metrics) from decoder outputs [L, B, D], posterior [B, Z] x2 and eps [L, B, Z]."""
    recon_l = LIKELIHOODS[cfg.likelihood](outputs, x)  # [L, B]
    kl = kl_term(mean, scale, cfg, eps)  # [B]
    recon = recon_l.mean(0)  # [B]
    beta = cfg.beta if beta is None else beta
    per_example = OBJECTIVES[cfg.objective](recon_l, kl, mean, scale, eps, cfg, beta)  # [B]
    loss = per_example.sum() if cfg.reduction == "sum" else per_example.mean()
    scale_d = scale.detach()  # the latent statistics below are not differentiated
    logvar = scale_d if cfg.scale_param == "logvar" else torch.log(torch.square(scale_d))  # [B, Z]
    dev2 = torch.square(logvar - logvar.mean(-1, keepdim=True)).sum(-1)  # [B] for step.latent_stats
    latent = {"mu_sum": mean.detach().sum(-1), "logvar_sum": logvar.sum(-1), "logvar_dev2": dev2}
    return loss, {"recon": recon, "kl": kl, "per_example": per_example, **latent}


def loss_fn(
    model: VAE,
    x: Tensor,
    eps_or_generator: Tensor | torch.Generator | None,
    cfg: VAEConfig,
    beta: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """(loss, metrics): the preset's objective reduced over the batch; metrics hold per-example
    recon [B] (mean over the L samples), kl [B], the per-example objective [B] and the per-example
    latent sums mu_sum, logvar_sum, logvar_dev2 [B] that step.latent_stats reduces."""
    eps = as_eps(eps_or_generator, cfg, x.shape[0], x)  # [L, B, Z]
    outputs, mean, scale = model(x, eps)  # [L, B, D]
    return objective(outputs, mean, scale, x, eps, cfg, beta)
