"""PyTorch MLP VAEs: Encoder -> (mean, scale parameter), Decoder -> outputs, plain reparameterize.

Mirror of jax_vae/models.py (same class, layer and argument names).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from jax_vae.common.config import VAEConfig, layer_specs

_ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "identity": lambda h: h,
    "leaky_relu": lambda h: torch.nn.functional.leaky_relu(h, 0.01),  # torch's default slope
}


Init = Callable[[Tensor], object]  # fills a tensor in place


def init_fns(init: str, fan_in: int) -> tuple[Init, Init]:
    """(weight_init, bias_init) reproducing each source's initializer; weight is [out, in].

    torch: nn.Linear's reset_parameters (kaiming_uniform(a=sqrt 5) on W, i.e. W, b ~ U(+-1/sqrt(fan_in)),
    the same draws in the same order); lua: Lua-torch Linear:reset(), W, b ~ U(+-1/sqrt(fan_in));
    wiseodd: W ~ N(0, std = 1/sqrt(fan_in/2)), b = 0; flax: lecun_normal (truncated normal, std
    1/sqrt(fan_in) after truncation correction), b = 0; glorot: xavier_uniform, b = 0.
    """
    bound = 1.0 / math.sqrt(fan_in)
    uniform: Init = lambda t: nn.init.uniform_(t, -bound, bound)
    zeros: Init = nn.init.zeros_
    if init == "torch":
        return (lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5))), uniform
    if init == "lua":
        return uniform, uniform
    if init == "wiseodd":
        return (lambda w: nn.init.normal_(w, 0.0, 1.0 / math.sqrt(fan_in / 2.0))), zeros
    if init == "flax":
        std = bound / 0.87962566103423978  # variance_scaling truncated-normal
        return (lambda w: nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)), zeros
    if init == "glorot":
        return nn.init.xavier_uniform_, zeros
    raise ValueError(f"unknown init {init!r}")


@torch.no_grad()
def _linear(cfg: VAEConfig, module: str, layer: str) -> nn.Linear:
    ((fan_in, fan_out),) = [(i, o) for m, n, i, o in layer_specs(cfg) if (m, n) == (module, layer)]
    linear = nn.Linear(fan_in, fan_out)
    weight_init, bias_init = init_fns(cfg.init, fan_in)
    weight_init(linear.weight)
    bias_init(linear.bias)
    return linear


class Encoder(nn.Module):
    """q(z|x): x [B, D] -> (mean [B, Z], scale parameter [B, Z]: logvar or sigma)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        for i in range(len(config.encoder_hidden)):
            self.add_module(f"hidden_{i}", _linear(config, "encoder", f"hidden_{i}"))
        if config.encoder_head == "split":
            self.head = _linear(config, "encoder", "head")
        else:
            self.mean = _linear(config, "encoder", "mean")
            self.add_module(config.scale_param, _linear(config, "encoder", config.scale_param))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cfg, act = self.config, _ACTIVATIONS[self.config.activation]
        h = x
        for i in range(len(cfg.encoder_hidden)):
            h = act(getattr(self, f"hidden_{i}")(h))  # [B, H_i]
        if cfg.encoder_head == "split":
            out = self.head(h)  # [B, 2Z]
            return out[..., : cfg.latent_dim], out[..., cfg.latent_dim :]
        return self.mean(h), getattr(self, cfg.scale_param)(h)


class Decoder(nn.Module):
    """p(x|z): z [..., Z] -> outputs [..., D] (probabilities, logits or real values)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        for i in range(len(config.decoder_hidden)):
            self.add_module(f"hidden_{i}", _linear(config, "decoder", f"hidden_{i}"))
        self.out = _linear(config, "decoder", "out")

    def forward(self, z: Tensor) -> Tensor:
        cfg, act = self.config, _ACTIVATIONS[self.config.activation]
        h = z
        for i in range(len(cfg.decoder_hidden)):
            h = act(getattr(self, f"hidden_{i}")(h))  # [..., H_i]
        out = self.out(h)  # [..., D]
        return torch.sigmoid(out) if cfg.decoder_output == "sigmoid" else out


def std_from_scale(scale: Tensor, scale_param: str) -> Tensor:
    """sigma = exp(logvar / 2), or the scale itself when the encoder emits sigma."""
    return torch.exp(0.5 * scale) if scale_param == "logvar" else scale


def reparameterize(mean: Tensor, std: Tensor, eps: Tensor) -> Tensor:
    """z = mean + std * eps; eps [B, Z] or [L, B, Z] broadcasts against mean [B, Z]."""
    return mean + std * eps


class VAE(nn.Module):
    """Encoder + Decoder; forward(x, eps) -> (outputs [L, B, D], mean [B, Z], scale [B, Z])."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        if config.arch == "conv":
            from torch_reference.conv_models import (
                ConvDecoder,
                ConvEncoder,
            )  # conv_models imports this module

            self.encoder: nn.Module = ConvEncoder(config)
            self.decoder: nn.Module = ConvDecoder(config)
        else:
            self.encoder, self.decoder = Encoder(config), Decoder(config)

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean, scale = self.encoder(x)  # [B, Z] x2
        z = reparameterize(mean, std_from_scale(scale, self.config.scale_param), eps)  # [L, B, Z]
        return self.decoder(z), mean, scale

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)


def sample_eps(
    generator: torch.Generator | None,
    cfg: VAEConfig,
    batch: int,
    num_samples: int | None = None,
    dtype=torch.float32,
    device=None,
) -> Tensor:
    """eps ~ N(0, I) of shape [L, B, Z] from an explicit generator."""
    L = cfg.num_samples if num_samples is None else num_samples
    return torch.randn((L, batch, cfg.latent_dim), generator=generator, dtype=dtype, device=device)


def init_params(seed: int, cfg: VAEConfig, dtype: torch.dtype = torch.float32) -> VAE:
    """A fresh VAE drawn with the preset's initializer from a forked global RNG seeded `seed`
    (torch layers draw from the global generator; the caller's RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(cfg).to(dtype)
