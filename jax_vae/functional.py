"""The JAX math both model APIs (jax_vae.linen, jax_vae.nnx) share: activations, initializers, the
reparameterization and the noise it takes. Mirror of torch_reference/functional.py."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_vae.common.config.vae_config import VAEConfig

Array = jax.Array


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "identity": lambda h: h,
    "leaky_relu": lambda h: nn.leaky_relu(h, 0.01),  # torch's default slope
}


def _uniform_fan_in(key: Array, shape: tuple[int, ...], dtype, fan_in: int) -> Array:
    """U(-1/sqrt(fan_in), +1/sqrt(fan_in))."""
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def init_fns(init: str, fan_in: int) -> tuple[Callable, Callable]:
    """(kernel_init, bias_init) reproducing each source's initializer; kernel is [in, out].

    torch / lua: W, b ~ U(+-1/sqrt(fan_in)) (torch's kaiming_uniform(a=sqrt 5) is exactly this bound);
    wiseodd: W ~ N(0, std = 1/sqrt(fan_in/2)), b = 0; flax: lecun_normal W, b = 0;
    glorot: xavier_uniform W, b = 0.
    """
    if init in ("torch", "lua"):
        uni = lambda key, shape, dtype=jnp.float32: _uniform_fan_in(key, shape, dtype, fan_in)
        return uni, uni
    if init == "wiseodd":
        std = 1.0 / jnp.sqrt(fan_in / 2.0)
        return (
            lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype),
            nn.initializers.zeros,
        )
    if init == "flax":
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    if init == "glorot":
        return nn.initializers.xavier_uniform(), nn.initializers.zeros
    raise ValueError(f"unknown init {init!r}")


def std_from_scale(scale: Array, scale_param: str) -> Array:
    """sigma = exp(logvar / 2), or the scale itself when the encoder emits sigma."""
    return jnp.exp(0.5 * scale) if scale_param == "logvar" else scale


def reparameterize(mean: Array, std: Array, eps: Array) -> Array:
    """z = mean + std * eps; eps [B, Z] or [L, B, Z] broadcasts against mean [B, Z]."""
    return mean + std * eps


def sample_eps(
    key: Array, cfg: VAEConfig, batch: int, num_samples: int | None = None, dtype=jnp.float32
) -> Array:
    """eps ~ N(0, I) of shape [L, B, Z] from an explicit key."""
    L = cfg.num_samples if num_samples is None else num_samples
    return jax.random.normal(key, (L, batch, cfg.latent_dim), dtype)


def as_eps(eps_or_key: Array, cfg: VAEConfig, batch: int, dtype) -> Array:
    """A PRNG key draws eps [L, B, Z]; a float array is eps itself ([B, Z] means L = 1)."""
    if jnp.issubdtype(eps_or_key.dtype, jax.dtypes.prng_key) or eps_or_key.dtype == jnp.uint32:
        return sample_eps(eps_or_key, cfg, batch, dtype=dtype)
    return eps_or_key if eps_or_key.ndim == 3 else eps_or_key[None]
