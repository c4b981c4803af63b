"""Flax MLP VAEs: Encoder -> (mean, scale parameter), Decoder -> outputs, plain reparameterize.

Mirror of torch_reference/nn/models.py (same class, layer and argument names).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_vae.common.config.vae_config import VAEConfig, layer_specs
from jax_vae.functional import ACTIVATIONS, init_fns, reparameterize, std_from_scale
from jax_vae.linen.conv_models import ConvDecoder, ConvEncoder

Array = jax.Array


def _dense(cfg: VAEConfig, module: str, layer: str) -> nn.Dense:
    ((fan_in, fan_out),) = [(i, o) for m, n, i, o in layer_specs(cfg) if (m, n) == (module, layer)]
    kernel_init, bias_init = init_fns(cfg.init, fan_in)
    return nn.Dense(fan_out, kernel_init=kernel_init, bias_init=bias_init, name=layer)


class Encoder(nn.Module):
    """q(z|x): x [B, D] -> (mean [B, Z], scale parameter [B, Z]: logvar or sigma)."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:  # train: no BatchNorm here
        cfg, act = self.config, ACTIVATIONS[self.config.activation]
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
    def __call__(self, z: Array, train: bool = False) -> Array:  # train: no BatchNorm here
        cfg, act = self.config, ACTIVATIONS[self.config.activation]
        h = z
        for i in range(len(cfg.decoder_hidden)):
            h = act(_dense(cfg, "decoder", f"hidden_{i}")(h))  # [..., H_i]
        out = _dense(cfg, "decoder", "out")(h)  # [..., D]
        return nn.sigmoid(out) if cfg.decoder_output == "sigmoid" else out


# The encoder / decoder bodies of each VAEConfig.arch: a network is a part the VAE is built from.
NETWORKS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (Encoder, Decoder),
    "conv": (ConvEncoder, ConvDecoder),
}


class VAE(nn.Module):
    """Encoder + Decoder; __call__(x, eps) -> (outputs [L, B, D], mean [B, Z], scale [B, Z]). `train`
    (conv presets with BatchNorm): batch statistics, apply with mutable=['batch_stats']."""

    config: VAEConfig

    def setup(self) -> None:
        encoder, decoder = NETWORKS[self.config.arch]
        self.encoder, self.decoder = encoder(self.config), decoder(self.config)

    def __call__(self, x: Array, eps: Array, train: bool = False) -> tuple[Array, Array, Array]:
        mean, scale = self.encoder(x, train)  # [B, Z] x2
        z = reparameterize(mean, std_from_scale(scale, self.config.scale_param), eps)  # [L, B, Z]
        return self.decoder(z, train), mean, scale

    def encode(self, x: Array) -> tuple[Array, Array]:
        return self.encoder(x, False)

    def decode(self, z: Array) -> Array:
        return self.decoder(z, False)


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
