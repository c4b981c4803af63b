"""The torch train step, mirror of jax_vae/step.py: (state, batch, generator) -> (state, metrics).

torch is stateful, so TrainState holds the live model, optimizer and scheduler and is updated in
place; `update` takes eps directly (parity tests inject it).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from jax_vae.common.config import VAEConfig
from torch_reference.losses import loss_fn
from torch_reference.models import VAE, sample_eps


@dataclasses.dataclass
class TrainState:
    """Everything that changes during training: step count, model, optimizer (and scheduler)."""

    step: int
    model: VAE
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None


def create_state(model: VAE, optimizer: torch.optim.Optimizer, scheduler=None) -> TrainState:
    """Step 0 state for `model`."""
    return TrainState(0, model, optimizer, scheduler)


def kl_weight(cfg: VAEConfig, step: int) -> float:
    """beta_t = beta * min(1, (step + 1) / warmup); beta when warm-up is off."""
    if cfg.kl_warmup_steps <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, (step + 1) / cfg.kl_warmup_steps)


def value_and_grad(model: VAE, batch: Tensor, eps: Tensor, cfg: VAEConfig, beta: float
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """(loss, aux) of loss_fn on batch [B, D], gradients accumulated into .grad. With
    cfg.micro_batch = m in (0, B), chunks of m examples (the last may be shorter) each backprop
    w * sum_i l_i, w = 1 (sum) or 1/B (mean): the same loss and gradient up to summation order."""
    n_batch, m = batch.shape[0], cfg.micro_batch
    if m <= 0 or m >= n_batch:
        loss, aux = loss_fn(model, batch, eps, cfg, beta)
        loss.backward()
        return loss, aux
    weight = 1.0 if cfg.reduction == "sum" else 1.0 / n_batch
    loss, auxes = torch.zeros((), dtype=batch.dtype, device=batch.device), []
    for start in range(0, n_batch, m):
        _, aux = loss_fn(model, batch[start:start + m], eps[:, start:start + m], cfg, beta)
        chunk_loss = aux["per_example"].sum() * weight
        chunk_loss.backward()
        loss = loss + chunk_loss.detach()
        auxes.append({k: v.detach() for k, v in aux.items()})
    return loss, {k: torch.cat([a[k] for a in auxes]) for k in auxes[0]}      # [B]


def update(state: TrainState, batch: Tensor, eps: Tensor, cfg: VAEConfig
           ) -> tuple[TrainState, dict[str, Tensor]]:
    """One optimizer step on batch [B, D] with injected eps [L, B, Z]."""
    state.optimizer.zero_grad(set_to_none=True)
    loss, aux = value_and_grad(state.model, batch, eps, cfg, kl_weight(cfg, state.step))
    state.optimizer.step()
    if state.scheduler is not None:
        state.scheduler.step()
    state.step += 1
    with torch.no_grad():
        metrics = {"loss": loss.detach(), "recon": aux["recon"].mean(), "kl": aux["kl"].mean(),
                   "objective": aux["per_example"].mean(), "finite": torch.isfinite(loss)}
    return state, metrics


def make_train_step(cfg: VAEConfig) -> Callable[[TrainState, Tensor, torch.Generator],
                                                 tuple[TrainState, dict[str, Tensor]]]:
    """train_step(state, batch, generator): eps ~ N(0, I) from `generator`, then `update`."""

    def train_step(state: TrainState, batch: Tensor, generator: torch.Generator | None):
        eps = sample_eps(generator, cfg, batch.shape[0], dtype=batch.dtype, device=batch.device)
        return update(state, batch, eps, cfg)

    return train_step
