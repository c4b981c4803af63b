"""Flax NNX twins of the Linen conv VAEs in conv_models.py: the same layers, names and math.

JAX-only (like nnx_models.py). Every layer is an attribute named as its Linen module (the prefixes of
jax_vae.common.config.architecture.plan), so nnx.state(model, nnx.Param) is the Linen params tree and
nnx.state(model, nnx.BatchStat) the Linen 'batch_stats' collection.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jax_vae.common.config.architecture import LayerSpec, conv_settings, image_hw, module_layers
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.functional import ACTIVATIONS, init_fns
from jax_vae.nnx.conv_layers import BatchNorm2d, Conv2d, ConvTranspose2d

Array = jax.Array


def _layer(cfg: VAEConfig, spec: LayerSpec, rngs: nnx.Rngs, dtype: Any) -> nnx.Module:
    """The NNX layer of one LayerSpec (as conv_models builds its Linen twin)."""
    if spec.kind == "batchnorm":
        return BatchNorm2d(spec.out_features, rngs=rngs, param_dtype=dtype)
    if spec.kind in ("linear_from_chw", "linear_to_chw", "linear"):
        kernel_init, bias_init = init_fns(cfg.init, spec.in_features)
        return nnx.Linear(
            spec.in_features,
            spec.out_features,
            kernel_init=kernel_init,
            bias_init=bias_init,
            param_dtype=dtype,
            rngs=rngs,
        )
    stride, pad, extra = conv_settings(cfg, spec)
    common: dict[str, Any] = dict(init_scheme=cfg.init, rngs=rngs, param_dtype=dtype)
    if spec.kind == "conv":
        return Conv2d(spec.in_features, spec.out_features, cfg.conv_kernel, stride, pad, **common)
    return ConvTranspose2d(spec.in_features, spec.out_features, cfg.conv_kernel, stride, pad, extra, **common)


# Layers are attributes set by name from the plan (as nnx_models' Linears), so they are read by name.
def _add_layers(obj: nnx.Module, cfg: VAEConfig, module: str, rngs: nnx.Rngs, dtype: Any) -> None:
    for name, spec in module_layers(cfg, module).items():
        setattr(obj, name, _layer(cfg, spec, rngs, dtype))


def _call(obj: Any, layer: str, h: Any) -> Any:
    """The layer attribute `layer` (set by name from the plan) applied to h."""
    return getattr(obj, layer)(h)


def _block(obj: nnx.Module, cfg: VAEConfig, layer: str, norm: str, h: Array, train: bool) -> Array:
    """conv [-> BatchNorm2d (batch statistics when training)] -> activation, NHWC."""
    h = getattr(obj, layer)(h)
    if hasattr(obj, norm):
        h = getattr(obj, norm)(h, use_running_average=not train)
    return ACTIVATIONS[cfg.activation](h)


class ConvEncoder(nnx.Module):
    """q(z|x): x [B, D] -> (mean [B, Z], scale parameter [B, Z]) through the conv stack."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32) -> None:
        self.config = cfg
        _add_layers(self, cfg, "encoder", rngs, param_dtype)

    def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:
        cfg = self.config
        h = x.reshape(x.shape[0], *image_hw(cfg), cfg.image_channels)  # [B, H, W, C]
        for i in range(len(cfg.conv_channels)):
            h = _block(self, cfg, f"conv_{i}", f"norm_{i}", h, train)
        h = h.reshape(h.shape[0], -1)  # [B, H*W*C]
        if cfg.encoder_head == "split":
            out = _call(self, "head", h)  # [B, 2Z]
            return out[..., : cfg.latent_dim], out[..., cfg.latent_dim :]
        return _call(self, "mean", h), getattr(self, cfg.scale_param)(h)


class ConvDecoder(nnx.Module):
    """p(x|z): z [..., Z] -> outputs [..., D] through the transposed-conv stack."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32) -> None:
        self.config = cfg
        _add_layers(self, cfg, "decoder", rngs, param_dtype)

    def __call__(self, z: Array, train: bool = False) -> Array:
        cfg = self.config
        lead = z.shape[:-1]
        c0, h0, w0 = cfg.decoder_start
        h = _call(self, "input", z.reshape(-1, z.shape[-1]))  # [N, H0*W0*C0]
        h = ACTIVATIONS[cfg.activation](h) if cfg.decoder_start_activation else h
        h = h.reshape(-1, h0, w0, c0)  # [N, H0, W0, C0]
        for i in range(len(cfg.deconv_channels)):
            h = _block(self, cfg, f"deconv_{i}", f"norm_{i}", h, train)
        out = _call(self, "out", h).reshape(*lead, -1)  # [..., D]
        if cfg.decoder_output == "sigmoid":
            return jax.nn.sigmoid(out)
        return jnp.tanh(out) if cfg.decoder_output == "tanh" else out
