"""Flax MLP VAEs: Encoder -> (mean, scale parameter), Decoder -> outputs, plain reparameterize.

Mirror of torch_reference/models.py (same class, layer and argument names).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_vae.common.config import VAEConfig, layer_specs

Array = jax.Array
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
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


def _dense(cfg: VAEConfig, module: str, layer: str) -> nn.Dense:
    ((fan_in, fan_out),) = [(i, o) for m, n, i, o in layer_specs(cfg) if (m, n) == (module, layer)]
    kernel_init, bias_init = init_fns(cfg.init, fan_in)
    return nn.Dense(fan_out, kernel_init=kernel_init, bias_init=bias_init, name=layer)


class Encoder(nn.Module):
    """q(z|x): x [B, D] -> (mean [B, Z], scale parameter [B, Z]: logvar or sigma)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        cfg, act = self.config, _ACTIVATIONS[self.config.activation]
        h = x
        for i in range(len(cfg.encoder_hidden)):
            h = act(_dense(cfg, "encoder", f"hidden_{i}")(h))  # [B, H_i]
        if cfg.encoder_head == "split":
            out = _dense(cfg, "encoder", "head")(h)  # [B, 2Z]
            return out[..., : cfg.latent_dim], out[..., cfg.latent_dim :]
        return _dense(cfg, "encoder", "mean")(h), _dense(cfg, "encoder", cfg.scale_param)(h)


class Decoder(nn.Module):
    """p(x|z): z [..., Z] -> outputs [..., D] (probabilities, logits or real values)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z: Array) -> Array:
        cfg, act = self.config, _ACTIVATIONS[self.config.activation]
        h = z
        for i in range(len(cfg.decoder_hidden)):
            h = act(_dense(cfg, "decoder", f"hidden_{i}")(h))  # [..., H_i]
        out = _dense(cfg, "decoder", "out")(h)  # [..., D]
        return nn.sigmoid(out) if cfg.decoder_output == "sigmoid" else out


def std_from_scale(scale: Array, scale_param: str) -> Array:
    """sigma = exp(logvar / 2), or the scale itself when the encoder emits sigma."""
    return jnp.exp(0.5 * scale) if scale_param == "logvar" else scale


def reparameterize(mean: Array, std: Array, eps: Array) -> Array:
    """z = mean + std * eps; eps [B, Z] or [L, B, Z] broadcasts against mean [B, Z]."""
    return mean + std * eps


class VAE(nn.Module):
    """Encoder + Decoder; __call__(x, eps) -> (outputs [L, B, D], mean [B, Z], scale [B, Z]). `train`
    (conv presets with BatchNorm): batch statistics, apply with mutable=['batch_stats']."""

    config: VAEConfig

    def setup(self) -> None:
        if self.config.arch == "conv":
            from jax_vae.conv_models import ConvDecoder, ConvEncoder  # conv_models imports this module

            self.encoder: nn.Module = ConvEncoder(self.config)
            self.decoder: nn.Module = ConvDecoder(self.config)
        else:
            self.encoder, self.decoder = Encoder(self.config), Decoder(self.config)

    def __call__(self, x: Array, eps: Array, train: bool = False) -> tuple[Array, Array, Array]:
        mean, scale = self._encode(x, train)  # [B, Z] x2
        z = reparameterize(mean, std_from_scale(scale, self.config.scale_param), eps)  # [L, B, Z]
        return self._decode(z, train), mean, scale

    def _encode(self, x: Array, train: bool) -> tuple[Array, Array]:
        return self.encoder(x, train) if self.config.arch == "conv" else self.encoder(x)

    def _decode(self, z: Array, train: bool) -> Array:
        return self.decoder(z, train) if self.config.arch == "conv" else self.decoder(z)

    def encode(self, x: Array) -> tuple[Array, Array]:
        return self._encode(x, False)

    def decode(self, z: Array) -> Array:
        return self._decode(z, False)


def sample_eps(
    key: Array, cfg: VAEConfig, batch: int, num_samples: int | None = None, dtype=jnp.float32
) -> Array:
    """eps ~ N(0, I) of shape [L, B, Z] from an explicit key."""
    L = cfg.num_samples if num_samples is None else num_samples
    return jax.random.normal(key, (L, batch, cfg.latent_dim), dtype)


def init_variables(key: Array, cfg: VAEConfig, dtype=jnp.float32) -> dict:
    """Fresh Flax variables {'params': ..., and with BatchNorm 'batch_stats': mean 0, var 1}."""
    x = jnp.zeros((1, cfg.input_dim), dtype)
    eps = jnp.zeros((1, 1, cfg.latent_dim), dtype)
    init = jax.jit(lambda k: dict(VAE(cfg).init(k, x, eps)))  # one program, not op by op
    return jax.tree_util.tree_map(lambda p: p.astype(dtype), init(key))


def init_params(key: Array, cfg: VAEConfig, dtype=jnp.float32) -> dict:
    """Fresh parameters {'encoder': ..., 'decoder': ...} drawn with the preset's initializer."""
    return init_variables(key, cfg, dtype)["params"]


# The JAX weights of a preset (what checkpoints, exports and the converter hold): its params tree, or
# with BatchNorm the variables {'params': ..., 'batch_stats': ...} (the running statistics are weights
# for evaluation, but the optimizer never sees them).
def weights(params: dict, batch_stats: dict | None, cfg: VAEConfig) -> dict:
    """The weights of (params, batch_stats)."""
    return {"params": params, "batch_stats": batch_stats or {}} if cfg.batch_norm else params


def init_weights(key: Array, cfg: VAEConfig, dtype=jnp.float32) -> dict:
    """Fresh weights (models.weights of init_variables)."""
    v = init_variables(key, cfg, dtype)
    return weights(v["params"], v.get("batch_stats"), cfg)


def split_weights(w: dict, cfg: VAEConfig) -> tuple[dict, dict | None]:
    """(params, batch_stats or None) of the weights."""
    return (w["params"], w["batch_stats"]) if cfg.batch_norm else (w, None)


def variables(w: dict, cfg: VAEConfig) -> dict:
    """The Flax variables to apply the weights with."""
    return w if cfg.batch_norm else {"params": w}
