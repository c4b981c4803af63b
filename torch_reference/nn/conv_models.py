"""PyTorch convolutional VAEs: ConvEncoder and ConvDecoder, NCHW inside, flat [B, D] outside.

Mirror of jax_vae/linen/conv_models.py (NHWC inside). The layers and their shapes are planned once for both
twins (jax_vae.common.config.architecture.plan); the attribute names are the plan's prefixes, so the
state_dict keys are 'encoder.conv_0.weight', ..., 'decoder.out.bias' (BatchNorm buffers included).
Images are flat [B, D] in (H, W, C) order outside the models, as on the JAX side.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from jax_vae.common.config.architecture import LayerSpec, conv_settings, image_hw, module_layers
from jax_vae.common.config.vae_config import VAEConfig
from torch_reference.functional import ACTIVATIONS, init_fns
from torch_reference.nn.conv_layers import BatchNorm2d, Conv2d, ConvTranspose2d


def _dense(cfg: VAEConfig, spec: LayerSpec) -> nn.Linear:
    linear = nn.Linear(spec.in_features, spec.out_features)
    weight_init, bias_init = init_fns(cfg.init, spec.in_features)
    weight_init(linear.weight)
    bias_init(linear.bias)
    return linear


def _conv(cfg: VAEConfig, spec: LayerSpec) -> nn.Module:
    """The Conv2d / ConvTranspose2d of a spec (kernel conv_kernel; architecture.conv_settings)."""
    stride, pad, extra = conv_settings(cfg, spec)
    if spec.kind == "conv":
        return Conv2d(spec.in_features, spec.out_features, cfg.conv_kernel, stride, pad, cfg.init)
    return ConvTranspose2d(spec.in_features, spec.out_features, cfg.conv_kernel, stride, pad, extra, cfg.init)


def _add_layers(module: nn.Module, cfg: VAEConfig, specs: dict[str, LayerSpec]) -> None:
    """One attribute per layer, named and ordered as the plan (the state_dict order)."""
    for name, spec in specs.items():
        if spec.kind in ("conv", "conv_transpose"):
            module.add_module(name, _conv(cfg, spec))
        elif spec.kind == "batchnorm":
            module.add_module(name, BatchNorm2d(spec.out_features))
        else:
            module.add_module(name, _dense(cfg, spec))


def _call(obj: Any, layer: str, h: Any) -> Any:
    """The layer attribute `layer` (set by name from the plan) applied to h."""
    return getattr(obj, layer)(h)


def _block(module: nn.Module, cfg: VAEConfig, layer: str, norm: str, h: Tensor) -> Tensor:
    """conv [-> BatchNorm2d (batch statistics in train mode)] -> activation, NCHW."""
    h = getattr(module, layer)(h)
    if hasattr(module, norm):
        h = getattr(module, norm)(h)
    return ACTIVATIONS[cfg.activation](h)


class ConvEncoder(nn.Module):
    """q(z|x): x [B, D] -> (mean [B, Z], scale parameter [B, Z]) through the conv stack."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        _add_layers(self, config, module_layers(config, "encoder"))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.config
        h = x.reshape(x.shape[0], *image_hw(cfg), cfg.image_channels).permute(0, 3, 1, 2)  # [B, C, H, W]
        for i in range(len(cfg.conv_channels)):
            h = _block(self, cfg, f"conv_{i}", f"norm_{i}", h)  # [B, C_i, H_i, W_i]
        h = torch.flatten(h, start_dim=1)  # [B, C*H*W] in NCHW order
        if cfg.encoder_head == "split":
            out = _call(self, "head", h)  # [B, 2Z]
            return out[..., : cfg.latent_dim], out[..., cfg.latent_dim :]
        return _call(self, "mean", h), getattr(self, cfg.scale_param)(h)


class ConvDecoder(nn.Module):
    """p(x|z): z [..., Z] -> outputs [..., D] through the transposed-conv stack."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        _add_layers(self, config, module_layers(config, "decoder"))

    def forward(self, z: Tensor) -> Tensor:
        cfg = self.config
        lead = z.shape[:-1]
        h = _call(self, "input", z.reshape(-1, z.shape[-1]))  # [N, C0*H0*W0]
        h = ACTIVATIONS[cfg.activation](h) if cfg.decoder_start_activation else h
        h = h.view(-1, *cfg.decoder_start)  # [N, C0, H0, W0]
        for i in range(len(cfg.deconv_channels)):
            h = _block(self, cfg, f"deconv_{i}", f"norm_{i}", h)
        out = _call(self, "out", h).permute(0, 2, 3, 1)  # [N, H, W, C]
        out = out.reshape(*lead, -1)  # [..., D] in (H, W, C) order
        if cfg.decoder_output == "sigmoid":
            return torch.sigmoid(out)
        return torch.tanh(out) if cfg.decoder_output == "tanh" else out
