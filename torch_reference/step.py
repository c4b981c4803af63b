"""The torch train step, mirror of jax_vae/step.py: (state, batch, key) -> (state, metrics).

torch is stateful, so TrainState holds the live model, optimizer and scheduler and is updated in
place; the key is a torch.Generator, which advances as it draws (JAX folds the step into its key
instead). `update` takes eps directly (parity tests inject it).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch
from torch import Tensor

from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.metrics import StepMetrics
from torch_reference.functional import sample_eps
from torch_reference.losses import loss_fn
from torch_reference.nn.models import VAE
from torch_reference.optim import Scheduler, Transform


@dataclasses.dataclass
class TrainState:
    """Everything that changes during training: step count, model, optimizer (and scheduler)."""

    step: int
    model: VAE
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None = None


def create_state(model: VAE, tx: Transform) -> TrainState:
    """Step 0 state for `model`, its optimizer built by `tx` over the model's parameters."""
    optimizer, scheduler = tx.init(model.parameters())
    return TrainState(0, model, optimizer, scheduler)


def kl_weight(cfg: VAEConfig, step: int) -> float:
    """beta_t = beta * min(1, (step + 1) / warmup); beta when warm-up is off."""
    if cfg.kl_warmup_steps <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, (step + 1) / cfg.kl_warmup_steps)


def value_and_grad(
    model: VAE, batch: Tensor, eps: Tensor, cfg: VAEConfig, beta: float
) -> tuple[tuple[Tensor, dict[str, Tensor]], dict[str, Tensor]]:
    """((loss, aux), grads) of loss_fn on batch [B, D]; grads {name: p.grad} are accumulated into
    .grad as torch does. With cfg.micro_batch = m in (0, B), chunks of m examples (the last may be
    shorter) each backprop w * sum_i l_i, w = 1 (sum) or 1/B (mean): the same loss and gradient
    up to summation order."""
    n_batch, m = batch.shape[0], cfg.micro_batch
    if m <= 0 or m >= n_batch:
        loss, aux = loss_fn(model, batch, eps, cfg, beta)
        loss.backward()
    else:
        weight = 1.0 if cfg.reduction == "sum" else 1.0 / n_batch
        loss, auxes = torch.zeros((), dtype=batch.dtype, device=batch.device), []
        for start in range(0, n_batch, m):
            _, chunk_aux = loss_fn(model, batch[start : start + m], eps[:, start : start + m], cfg, beta)
            chunk_loss = chunk_aux["per_example"].sum() * weight
            chunk_loss.backward()
            loss = loss + chunk_loss.detach()
            auxes.append({k: v.detach() for k, v in chunk_aux.items()})
        aux = {k: torch.cat([a[k] for a in auxes]) for k in auxes[0]}  # [B]
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return (loss, aux), grads


def latent_stats(aux: dict[str, Tensor], latent_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(mean mu, unbiased std logvar, mean logvar) over the n = B * Z entries, from the per-example sums
    [B] of loss_fn's aux: std^2 = (sum_i dev2_i + Z sum_i (logvar_sum_i / Z - mean)^2) / max(n - 1, 1)."""
    n = aux["mu_sum"].shape[0] * latent_dim
    logvar_mean = aux["logvar_sum"].sum() / n
    between = torch.square(aux["logvar_sum"] / latent_dim - logvar_mean).sum() * latent_dim
    logvar_std = torch.sqrt((aux["logvar_dev2"].sum() + between) / max(n - 1, 1))
    return aux["mu_sum"].sum() / n, logvar_std, logvar_mean


def step_metrics(loss: Tensor, aux: dict[str, Tensor], latent_dim: int) -> StepMetrics:
    """StepMetrics from the batch loss and the per-example aux [B] of value_and_grad (not differentiated)."""
    with torch.no_grad():
        mu_mean, logvar_std, logvar_mean = latent_stats(aux, latent_dim)
        return StepMetrics(
            loss=aux["per_example"].mean(),
            recon=aux["recon"].mean(),
            kl=aux["kl"].mean(),
            mu_mean=mu_mean,
            logvar_std=logvar_std,
            logvar_mean=logvar_mean,
            batch_loss=loss.detach(),
            finite=torch.isfinite(loss),
        )


def update(state: TrainState, batch: Tensor, eps: Tensor, cfg: VAEConfig) -> tuple[TrainState, StepMetrics]:
    """One optimizer step on batch [B, D] with injected eps [L, B, Z] (the optimizer is in the state)."""
    state.optimizer.zero_grad(set_to_none=True)
    (loss, aux), _ = value_and_grad(state.model, batch, eps, cfg, kl_weight(cfg, state.step))
    state.optimizer.step()
    if state.scheduler is not None:
        state.scheduler.step()
    state.step += 1
    return state, step_metrics(loss, aux, cfg.latent_dim)


def train_step(
    state: TrainState, batch: Tensor, key: torch.Generator | None, cfg: VAEConfig
) -> tuple[TrainState, StepMetrics]:
    """eps ~ N(0, I) drawn from the generator `key`, then `update`."""
    eps = sample_eps(key, cfg, batch.shape[0], dtype=batch.dtype, device=batch.device)
    return update(state, batch, eps, cfg)


def make_train_step(
    cfg: VAEConfig,
) -> Callable[[TrainState, Tensor, torch.Generator | None], tuple[TrainState, StepMetrics]]:
    """train_step(state, batch, key) with cfg closed over (eager: nothing to compile)."""
    return functools.partial(train_step, cfg=cfg)
