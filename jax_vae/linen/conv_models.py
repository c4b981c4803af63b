"""Flax (Linen) convolutional VAEs: ConvEncoder and ConvDecoder, NHWC inside, flat [B, D] outside.

Mirror of torch_reference/nn/conv_models.py (NCHW inside). The layers and their shapes are planned once
for both twins (jax_vae.common.config.architecture.plan); the layer names are the plan's prefixes, so the
params tree is {'encoder': {'conv_0': ..., 'head': ...}, 'decoder': {'input': ..., 'out': ...}} and
BatchNorm statistics live in the 'batch_stats' collection. Images are flat [B, D] in (H, W, C) order
outside the models, so the data, losses and evaluation are those of the MLP presets.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_vae.common.config.architecture import LayerSpec, conv_settings, image_hw, module_layers
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.functional import ACTIVATIONS, init_fns
from jax_vae.linen.conv_layers import BatchNorm2d, Conv2d, ConvTranspose2d

Array = jax.Array


def _dense(cfg: VAEConfig, spec: LayerSpec) -> nn.Dense:
    kernel_init, bias_init = init_fns(cfg.init, spec.in_features)
    return nn.Dense(
        spec.out_features, kernel_init=kernel_init, bias_init=bias_init, name=spec.prefix.split(".")[1]
    )


def _conv(cfg: VAEConfig, spec: LayerSpec) -> nn.Module:
    """The Conv2d / ConvTranspose2d of a spec (kernel conv_kernel; architecture.conv_settings)."""
    name, k = spec.prefix.split(".")[1], cfg.conv_kernel
    stride, pad, extra = conv_settings(cfg, spec)
    if spec.kind == "conv":
        return Conv2d(spec.in_features, spec.out_features, k, stride, pad, cfg.init, name=name)
    return ConvTranspose2d(spec.in_features, spec.out_features, k, stride, pad, extra, cfg.init, name=name)


def _block(
    cfg: VAEConfig, specs: dict[str, LayerSpec], layer: str, norm: str, h: Array, train: bool
) -> Array:
    """conv [-> BatchNorm2d (batch statistics when training)] -> activation, NHWC."""
    h = _conv(cfg, specs[layer])(h)
    if norm in specs:
        h = BatchNorm2d(specs[norm].out_features, name=norm)(h, use_running_average=not train)
    return ACTIVATIONS[cfg.activation](h)


class ConvEncoder(nn.Module):
    """q(z|x): x [B, D] -> (mean [B, Z], scale parameter [B, Z]) through the conv stack."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:
        cfg, specs = self.config, module_layers(self.config, "encoder")
        h = x.reshape(x.shape[0], *image_hw(cfg), cfg.image_channels)  # [B, H, W, C]
        for i in range(len(cfg.conv_channels)):
            h = _block(cfg, specs, f"conv_{i}", f"norm_{i}", h, train)  # [B, H_i, W_i, C_i]
        h = h.reshape(h.shape[0], -1)  # [B, H*W*C] in NHWC order (the converter permutes torch's)
        if cfg.encoder_head == "split":
            out = _dense(cfg, specs["head"])(h)  # [B, 2Z]
            return out[..., : cfg.latent_dim], out[..., cfg.latent_dim :]
        return _dense(cfg, specs["mean"])(h), _dense(cfg, specs[cfg.scale_param])(h)


class ConvDecoder(nn.Module):
    """p(x|z): z [..., Z] -> outputs [..., D] through the transposed-conv stack."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z: Array, train: bool = False) -> Array:
        cfg, specs = self.config, module_layers(self.config, "decoder")
        lead = z.shape[:-1]
        c0, h0, w0 = cfg.decoder_start
        h = _dense(cfg, specs["input"])(z.reshape(-1, z.shape[-1]))  # [N, H0*W0*C0]
        h = ACTIVATIONS[cfg.activation](h) if cfg.decoder_start_activation else h
        h = h.reshape(-1, h0, w0, c0)  # [N, H0, W0, C0]
        for i in range(len(cfg.deconv_channels)):
            h = _block(cfg, specs, f"deconv_{i}", f"norm_{i}", h, train)
        out = _conv(cfg, specs["out"])(h)  # [N, H, W, C]
        out = out.reshape(*lead, -1)  # [..., D]
        if cfg.decoder_output == "sigmoid":
            return nn.sigmoid(out)
        return jnp.tanh(out) if cfg.decoder_output == "tanh" else out
