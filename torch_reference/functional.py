"""The PyTorch math the models share: activations, initializers, the reparameterization and the noise
it takes. Mirror of jax_vae/functional.py."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from jax_vae.common.config.vae_config import VAEConfig

ACTIVATIONS = {
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


def std_from_scale(scale: Tensor, scale_param: str) -> Tensor:
    """sigma = exp(logvar / 2), or the scale itself when the encoder emits sigma."""
    return torch.exp(0.5 * scale) if scale_param == "logvar" else scale


def reparameterize(mean: Tensor, std: Tensor, eps: Tensor) -> Tensor:
    """z = mean + std * eps; eps [B, Z] or [L, B, Z] broadcasts against mean [B, Z]."""
    return mean + std * eps


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


def as_eps(
    eps_or_generator: Tensor | torch.Generator | None, cfg: VAEConfig, batch: int, x: Tensor
) -> Tensor:
    """A generator (or None) draws eps [L, B, Z]; a tensor is eps itself ([B, Z] means L = 1)."""
    if isinstance(eps_or_generator, Tensor):  # checked first: keeps torch.compile graphs whole
        return eps_or_generator if eps_or_generator.ndim == 3 else eps_or_generator[None]
    return sample_eps(eps_or_generator, cfg, batch, dtype=x.dtype, device=x.device)
