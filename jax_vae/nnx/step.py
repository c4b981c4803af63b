"""Train steps for the NNX VAE (nnx_models.py), in the two styles NNX code is written in.

JAX-only (like parallel.py). Both styles compute one step exactly as step.py does for Linen: eps from
fold_in(key, step), beta = step.kl_weight(cfg, step), the (micro-batched) gradient of
step.value_and_grad with the NNX loss plugged in (nnx_models.params_loss), tx.update +
optax.apply_updates, and step.step_metrics; only the bookkeeping around it differs.

1. Idiomatic, as Flax's guides write it: the model and an `nnx.Optimizer(model, tx, wrt=nnx.Param)`
   are mutable objects, and the `@nnx.jit` `train_step(model, optimizer, batch, key, cfg)` updates
   both in place and returns the StepMetrics. nnx.jit walks the model and optimizer graphs in
   Python on every call (split before, update after), a per-call cost that shows at small batches.

       model = nnx_models.init_model(jax.random.key(0), cfg)
       optimizer = nnx_step.create_optimizer(model, optim.make_optimizer(cfg))
       metrics = nnx_step.train_step(model, optimizer, batch, key, cfg)

2. Functional, for speed: `graphdef, state = nnx_step.split(model, tx)` once, outside any jit; state
   is step.TrainState (step, the Linen-layout params dict, opt_state), graphdef is static. The jitted
   `(state, batch, key) -> (state, metrics)` step and the chunk `lax.scan` over it call
   `nnx.merge(graphdef, params)` only inside the traced function, so a call is a plain jax.jit
   dispatch; `nnx_step.merge(graphdef, state)` gives the model back.

       graphdef, state = nnx_step.split(model, tx)
       step = nnx_step.make_functional_step(graphdef, cfg, tx)
       state, metrics = step(state, batch, key)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import cast

import jax
import optax
from flax import nnx

from jax_vae import step as js
from jax_vae.chunk import make_chunk_fn
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.metrics import StepMetrics
from jax_vae.functional import sample_eps
from jax_vae.nnx.models import VAE, params_loss

Array = jax.Array
# flax >= 0.11: optimizer.update(model, grads); before: the optimizer holds the model, update(grads)
_UPDATE_TAKES_MODEL = "model" in inspect.signature(nnx.Optimizer.update).parameters


def _split(model: VAE) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, the nnx.Param state, the nnx.BatchStat state: empty without BatchNorm)."""
    graphdef, params, batch_stats = cast(tuple, nnx.split(model, nnx.Param, nnx.BatchStat))
    return graphdef, params, batch_stats


# --- 1. idiomatic: nnx.Optimizer and an nnx.jit step that mutates model and optimizer


def create_optimizer(model: VAE, tx: optax.GradientTransformation) -> nnx.Optimizer:
    """nnx.Optimizer over the model's nnx.Param variables, step count 0."""
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def optimizer_step(optimizer: nnx.Optimizer) -> Array:
    """The optimizer's step count (the number of updates applied): a uint32 scalar."""
    return optimizer.step[...]


def update(
    model: VAE, optimizer: nnx.Optimizer, batch: Array, eps: Array, cfg: VAEConfig, shards: int = 1
) -> StepMetrics:
    """One optimizer step on batch [B, D] with injected eps [L, B, Z], model and optimizer in place
    (a BatchNorm model's running statistics too)."""
    graphdef, params, batch_stats = _split(model)  # nnx.States
    beta = js.kl_weight(cfg, optimizer_step(optimizer))
    loss_of = params_loss(graphdef)
    if cfg.batch_norm:
        loss_of = functools.partial(loss_of, batch_stats=batch_stats)
    (loss, aux), grads = js.value_and_grad(cast(dict, params), batch, eps, cfg, beta, shards, loss_of)
    if cfg.batch_norm:
        nnx.update(model, cast(dict, aux).pop("batch_stats"))
    if _UPDATE_TAKES_MODEL:
        optimizer.update(model, grads)
    else:  # flax < 0.11
        optimizer.update(grads)  # type: ignore[call-arg]
    return js.step_metrics(loss, aux, cfg.latent_dim)


@nnx.jit(static_argnames=("cfg", "shards"))
def train_step(
    model: VAE, optimizer: nnx.Optimizer, batch: Array, key: Array, cfg: VAEConfig, shards: int = 1
) -> StepMetrics:
    """eps ~ N(0, I) from fold_in(key, optimizer step), then `update`; nnx.jit-compiled per cfg."""
    step = optimizer_step(optimizer)
    eps = sample_eps(jax.random.fold_in(key, step), cfg, batch.shape[0], dtype=batch.dtype)
    return update(model, optimizer, batch, eps, cfg, shards)


# --- 2. functional: split once, a pure jitted step on (step, params, opt_state)


def split(model: VAE, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, js.TrainState]:
    """(graphdef, step-0 TrainState) of `model`: params = nnx.to_pure_dict(nnx.split(model)[1]), the
    Linen params tree, so the state is the one step.py, checkpoints and the converter use."""
    graphdef, params, batch_stats = _split(model)
    stats = nnx.to_pure_dict(batch_stats)  # {} without BatchNorm
    return graphdef, js.create_state(nnx.to_pure_dict(params), tx, stats)


def merge(graphdef: nnx.GraphDef, state: js.TrainState) -> VAE:
    """The NNX model holding state.params (and batch_stats), outside or inside a traced function."""
    return nnx.merge(graphdef, state.params, *([state.batch_stats] if state.batch_stats else []))


def functional_update(
    graphdef: nnx.GraphDef,
    state: js.TrainState,
    batch: Array,
    eps: Array,
    cfg: VAEConfig,
    tx: optax.GradientTransformation,
    shards: int = 1,
) -> tuple[js.TrainState, StepMetrics]:
    """step.update with the NNX model: one optimizer step on batch [B, D] with injected eps [L, B, Z]."""
    return js.update(state, batch, eps, cfg, tx, shards, params_loss(graphdef))


def functional_train_step(
    graphdef: nnx.GraphDef,
    state: js.TrainState,
    batch: Array,
    key: Array,
    cfg: VAEConfig,
    tx: optax.GradientTransformation,
    shards: int = 1,
) -> tuple[js.TrainState, StepMetrics]:
    """step.train_step with the NNX model: eps from fold_in(key, state.step), then the update."""
    return js.train_step(state, batch, key, cfg, tx, shards, params_loss(graphdef))


def make_functional_step(
    graphdef: nnx.GraphDef, cfg: VAEConfig, tx: optax.GradientTransformation
) -> Callable[[js.TrainState, Array, Array], tuple[js.TrainState, StepMetrics]]:
    """functional_train_step(state, batch, key) with graphdef, cfg and tx closed over, jitted once,
    state donated (as step.make_train_step)."""
    fn = functools.partial(functional_train_step, graphdef, cfg=cfg, tx=tx)
    return jax.jit(fn, donate_argnums=0)


def make_functional_chunk(
    graphdef: nnx.GraphDef, cfg: VAEConfig, tx: optax.GradientTransformation
) -> Callable[[js.TrainState, Array, Array, Array], tuple[js.TrainState, StepMetrics]]:
    """chunk(state, data [N, D], idx [S, B], eps_key) -> (state, metrics [S]): lax.scan of
    functional_train_step over the batches data[idx[s]], gathered on device; state donated. It is
    chunk.make_chunk_fn with the NNX loss, the program `train --api nnx` runs."""
    return make_chunk_fn(cfg, tx, apply_loss=params_loss(graphdef))
