"""The pure train step: (state, batch, key) -> (state, metrics), jit-compiled once per config.

Mirror of torch_reference/step.py. `update` takes eps directly (parity tests inject it);
`make_train_step` draws eps from the key and wraps `update` in jax.jit with donated state.
"""
from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jax_vae.config import VAEConfig
from jax_vae.losses import loss_fn
from jax_vae.models import sample_eps

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training: step count, parameters, optimizer state."""

    step: Array
    params: dict
    opt_state: optax.OptState


def create_state(params: dict, tx: optax.GradientTransformation) -> TrainState:
    """Step 0 state for `params`."""
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))


def kl_weight(cfg: VAEConfig, step: Array) -> Array:
    """beta_t = beta * min(1, (step + 1) / warmup); beta when warm-up is off."""
    if cfg.kl_warmup_steps <= 0:
        return jnp.asarray(cfg.beta)
    t = (step + 1).astype(jnp.result_type(float))    # int32 / int would round to float32 under x64
    return cfg.beta * jnp.minimum(1.0, t / cfg.kl_warmup_steps)


def update(state: TrainState, batch: Array, eps: Array, cfg: VAEConfig,
           tx: optax.GradientTransformation) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step on batch [B, D] with injected eps [L, B, Z]."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, batch, eps, cfg, kl_weight(cfg, state.step))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "recon": aux["recon"].mean(), "kl": aux["kl"].mean(),
               "objective": aux["per_example"].mean(), "finite": jnp.isfinite(loss)}
    return TrainState(state.step + 1, params, opt_state), metrics


def make_train_step(cfg: VAEConfig, tx: optax.GradientTransformation, jit: bool = True
                    ) -> Callable[[TrainState, Array, Array], tuple[TrainState, dict[str, Array]]]:
    """train_step(state, batch, key): eps ~ N(0, I) from `key`, then `update`; state is donated."""

    def train_step(state: TrainState, batch: Array, key: Array):
        eps = sample_eps(key, cfg, batch.shape[0], dtype=batch.dtype)
        return update(state, batch, eps, cfg, tx)

    return jax.jit(train_step, donate_argnums=0) if jit else train_step
