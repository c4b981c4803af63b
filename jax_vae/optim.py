"""Optimizers as optax transforms, each matching its PyTorch twin in torch_reference/optim.py.

adam:     torch.optim.Adam(lr, betas, eps, weight_decay) == chain(add_decayed_weights(wd), adam)
          (coupled L2: wd * p is added to the gradient before the moments, unlike AdamW);
lua_adam: Lua-torch optim.adam: lr_t = lr / (1 + t * lr_decay), epsilon added to sqrt(v) BEFORE
          the bias correction: p -= lr_t * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.training import plan


class LuaAdamState(NamedTuple):
    count: jax.Array  # type: ignore[assignment]  # t, number of updates done (shadows tuple.count)
    mu: optax.Updates  # m
    nu: optax.Updates  # v


def lua_adam(
    lr: float, lr_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Lua-torch optim.adam as an optax transform (returns the full update, lr included)."""

    def init_fn(params: optax.Params) -> LuaAdamState:
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # distinct buffers (donation)
        return LuaAdamState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update_fn(grads: optax.Updates, state: LuaAdamState, params=None):
        del params
        clr = lr / (1.0 + state.count * lr_decay)
        t = state.count + 1
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        tf = t.astype(jnp.result_type(float))
        step_size = clr * jnp.sqrt(1 - b2**tf) / (1 - b1**tf)
        # in the parameters' dtype, as torch's in-place addcdiv_ (no float64 promotion under x64)
        updates = jax.tree_util.tree_map(
            lambda m, v: -step_size.astype(m.dtype) * m / (jnp.sqrt(v) + eps), mu, nu
        )
        return updates, LuaAdamState(t, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def iwae_lr_schedule(lr: float, steps_per_epoch: int, stages: int = 8) -> optax.Schedule:
    """Burda et al.: lr * 10**(-i/7) for 3**i epochs, i = 0..stages-1 (then held)."""
    boundaries = plan.iwae_lr_boundaries(steps_per_epoch, stages)
    return optax.piecewise_constant_schedule(lr, {b: 10 ** (-1 / 7) for b in boundaries})


def exponential_lr_schedule(lr: float, gamma: float, steps_per_epoch: int) -> optax.Schedule:
    """lr * gamma**e during epoch e = step // steps_per_epoch (integer division: exact at every step):
    torch's ExponentialLR stepped once per epoch."""

    def schedule(count: jax.Array) -> jax.Array:
        epoch = jnp.asarray(count) // steps_per_epoch
        return lr * jnp.power(gamma, epoch.astype(jnp.result_type(float)))

    return schedule


def _learning_rate(cfg: VAEConfig, steps_per_epoch: int | None) -> float | optax.Schedule:
    """The preset's learning rate: a constant, the IWAE step schedule or the per-epoch exponential."""
    if cfg.lr_schedule in ("iwae", "exponential") and not steps_per_epoch:
        raise ValueError(f"lr_schedule={cfg.lr_schedule!r} needs steps_per_epoch")
    if cfg.lr_schedule == "iwae":
        assert steps_per_epoch
        return iwae_lr_schedule(cfg.lr, steps_per_epoch)
    if cfg.lr_schedule == "exponential":
        assert steps_per_epoch
        return exponential_lr_schedule(cfg.lr, cfg.lr_gamma, steps_per_epoch)
    return cfg.lr


def make_optimizer(cfg: VAEConfig, steps_per_epoch: int | None = None) -> optax.GradientTransformation:
    """The preset's optimizer, coupled weight decay first (as torch adds wd * p to the gradient)."""
    if cfg.optimizer == "lua_adam":
        base = lua_adam(cfg.lr, cfg.lr_decay, cfg.b1, cfg.b2, cfg.adam_eps)
    else:
        base = optax.adam(_learning_rate(cfg, steps_per_epoch), b1=cfg.b1, b2=cfg.b2, eps=cfg.adam_eps)
    if cfg.weight_decay > 0:
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay), base)
    return base
