"""PyTorch MLP VAEs: Encoder -> (mean, scale parameter), Decoder -> outputs, plain reparameterize.

Mirror of jax_vae/linen/models.py (same class, layer and argument names).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jax_vae.common.config.vae_config import VAEConfig, layer_specs
from torch_reference.functional import ACTIVATIONS, init_fns, reparameterize, std_from_scale
from torch_reference.nn.conv_models import ConvDecoder, ConvEncoder


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
        cfg, act = self.config, ACTIVATIONS[self.config.activation]
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
        cfg, act = self.config, ACTIVATIONS[self.config.activation]
        h = z
        for i in range(len(cfg.decoder_hidden)):
            h = act(getattr(self, f"hidden_{i}")(h))  # [..., H_i]
        out = self.out(h)  # [..., D]
        return torch.sigmoid(out) if cfg.decoder_output == "sigmoid" else out


# The encoder / decoder bodies of each VAEConfig.arch: a network is a part the VAE is built from.
NETWORKS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (Encoder, Decoder),
    "conv": (ConvEncoder, ConvDecoder),
}


class VAE(nn.Module):
    """Encoder + Decoder; forward(x, eps) -> (outputs [L, B, D], mean [B, Z], scale [B, Z])."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        encoder, decoder = NETWORKS[config.arch]
        self.encoder, self.decoder = encoder(config), decoder(config)

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean, scale = self.encoder(x)  # [B, Z] x2
        z = reparameterize(mean, std_from_scale(scale, self.config.scale_param), eps)  # [L, B, Z]
        return self.decoder(z), mean, scale

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)


def init_params(seed: int, cfg: VAEConfig, dtype: torch.dtype = torch.float32) -> VAE:
    """A fresh VAE drawn with the preset's initializer from a forked global RNG seeded `seed`
    (torch layers draw from the global generator; the caller's RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(cfg).to(dtype)
