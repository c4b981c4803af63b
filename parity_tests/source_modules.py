"""The sources' own modules, written as each source describes them (layer names, order, activations,
forward, loss), for the source-checkpoint parity tests and docs/examples/source_checkpoint.py.

Each torch source: a module whose forward takes injected eps [B, Z] and returns what the source's loss
reads, and `<source>_loss(module, x, eps)` -> the source's own scalar loss. They are independent of
jax-vae's code on purpose: they are what a user trained with the source's code holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import torch
import torch.nn.functional as F
from torch import Tensor


def _kld_logvar(mu: Tensor, logvar: Tensor) -> Tensor:
    """-0.5 * sum(1 + logvar - mu^2 - exp(logvar)), summed over the batch (as the sources write it)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


class PytorchExamplesVAE(torch.nn.Module):
    """pytorch/examples vae/main.py: fc1 784->400, fc21/fc22 400->20, fc3 20->400, fc4 400->784."""

    def __init__(self, input_dim: int = 784, hidden: int = 400, latent: int = 20) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(input_dim, hidden)
        self.fc21 = torch.nn.Linear(hidden, latent)
        self.fc22 = torch.nn.Linear(hidden, latent)
        self.fc3 = torch.nn.Linear(latent, hidden)
        self.fc4 = torch.nn.Linear(hidden, input_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x.view(-1, self.fc1.in_features))
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def pytorch_examples_loss(model: PytorchExamplesVAE, x: Tensor, eps: Tensor) -> Tensor:
    """loss_function of vae/main.py: BCE(reduction='sum') + KLD, summed over the batch."""
    recon, mu, logvar = model(x, eps)
    return F.binary_cross_entropy(recon, x.view(-1, recon.shape[-1]), reduction="sum") + _kld_logvar(
        mu, logvar
    )


class MinimalistVAE(torch.nn.Module):
    """The minimalist VAE: e_input2hidden 784->500, e_hidden2mean/logvar 500->2, d_latent2hidden,
    d_hidden2image; ReLU hidden, sigmoid output."""

    def __init__(self, input_dim: int = 784, hidden: int = 500, latent: int = 2) -> None:
        super().__init__()
        self.e_input2hidden = torch.nn.Linear(input_dim, hidden)
        self.e_hidden2mean = torch.nn.Linear(hidden, latent)
        self.e_hidden2logvar = torch.nn.Linear(hidden, latent)
        self.d_latent2hidden = torch.nn.Linear(latent, hidden)
        self.d_hidden2image = torch.nn.Linear(hidden, input_dim)

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = F.relu(self.e_input2hidden(x))
        mean, logvar = self.e_hidden2mean(h), self.e_hidden2logvar(h)
        z = mean + torch.exp(logvar / 2) * eps
        return torch.sigmoid(self.d_hidden2image(F.relu(self.d_latent2hidden(z)))), mean, logvar


def minimalist_loss(model: MinimalistVAE, x: Tensor, eps: Tensor) -> Tensor:
    """BCE summed + KL summed over the batch."""
    recon, mean, logvar = model(x, eps)
    return F.binary_cross_entropy(recon, x, reduction="sum") + _kld_logvar(mean, logvar)


class DeepMSEVAE(torch.nn.Module):
    """The deep MSE VAE: nn.Sequential encoder 784-256-128-32 (ReLU after each), fc_mu / fc_log_var
    32->10, decoder 10-32-128-256-784 (ReLU between, no output activation)."""

    def __init__(self, input_dim: int = 784, latent: int = 10) -> None:
        super().__init__()
        L, R = torch.nn.Linear, torch.nn.ReLU
        self.encoder = torch.nn.Sequential(L(input_dim, 256), R(), L(256, 128), R(), L(128, 32), R())
        self.fc_mu = L(32, latent)
        self.fc_log_var = L(32, latent)
        self.decoder = torch.nn.Sequential(
            L(latent, 32), R(), L(32, 128), R(), L(128, 256), R(), L(256, input_dim)
        )

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.encoder(x)
        mu, log_var = self.fc_mu(h), self.fc_log_var(h)
        z = mu + eps * torch.exp(0.5 * log_var)
        return self.decoder(z), mu, log_var


def deep_mse_loss(model: DeepMSEVAE, x: Tensor, eps: Tensor) -> Tensor:
    """MSE summed over pixels and batch + KL summed."""
    recon, mu, log_var = model(x, eps)
    return F.mse_loss(recon, x, reduction="sum") + _kld_logvar(mu, log_var)


class Day37VAE(torch.nn.Module):
    """Day 37: nn.Sequential without activations; encoder.2 emits 20 = 10 means then 10 sigmas."""

    def __init__(self, input_dim: int = 784, latent: int = 10) -> None:
        super().__init__()
        L = torch.nn.Linear
        self.latent = latent
        self.encoder = torch.nn.Sequential(L(input_dim, 256), L(256, 64), L(64, 2 * latent))
        self.decoder = torch.nn.Sequential(L(latent, 64), L(64, 256), L(256, input_dim))

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.encoder(x)
        mu, sigma = out[:, : self.latent], out[:, self.latent :]
        return self.decoder(mu + sigma * eps), mu, sigma


def day37_loss(model: Day37VAE, x: Tensor, eps: Tensor) -> Tensor:
    """MSE mean over every element + 0.5 sum(mu^2 + sigma^2 - log(1e-8 + sigma^2) - 1) / x.numel()."""
    recon, mu, sigma = model(x, eps)
    kl = 0.5 * torch.sum(mu**2 + sigma**2 - torch.log(1e-8 + sigma**2) - 1) / x.numel()
    return F.mse_loss(recon, x) + kl


def wiseodd_tensors(dtype: torch.dtype, seed: int = 0) -> dict[str, Tensor]:
    """wiseodd's raw leaf tensors, [in, out] weights, drawn N(0, 1/sqrt(fan_in/2)) with small biases."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"xh": (784, 128), "hz_mu": (128, 100), "hz_var": (128, 100), "zh": (100, 128), "hx": (128, 784)}
    out = {}
    for name, (fan_in, fan_out) in shapes.items():
        out[f"W{name}"] = torch.randn(fan_in, fan_out, generator=g, dtype=dtype) / (fan_in / 2) ** 0.5
        out[f"b{name}"] = 0.1 * torch.randn(fan_out, generator=g, dtype=dtype)
    return {k: v.requires_grad_() for k, v in out.items()}


def wiseodd_loss(p: dict[str, Tensor], x: Tensor, eps: Tensor) -> Tensor:
    """The post's Q, sample_z, P and loss: BCE(size_average=False) + 0.5 sum(e^z_var + z_mu^2 - 1 - z_var)."""
    h = F.relu(x @ p["Wxh"] + p["bxh"].repeat(x.size(0), 1))
    z_mu = h @ p["Whz_mu"] + p["bhz_mu"].repeat(h.size(0), 1)
    z_var = h @ p["Whz_var"] + p["bhz_var"].repeat(h.size(0), 1)
    z = z_mu + torch.exp(z_var / 2) * eps
    h = F.relu(z @ p["Wzh"] + p["bzh"].repeat(z.size(0), 1))
    x_sample = torch.sigmoid(h @ p["Whx"] + p["bhx"].repeat(h.size(0), 1))
    recon = F.binary_cross_entropy(x_sample, x, reduction="sum")
    return recon + 0.5 * torch.sum(torch.exp(z_var) + z_mu**2 - 1.0 - z_var)


TORCH_SOURCES: dict[str, tuple[Callable[..., Any], Callable[..., Tensor]]] = {
    "pytorch-examples": (PytorchExamplesVAE, pytorch_examples_loss),
    "minimalist": (MinimalistVAE, minimalist_loss),
    "deep-mse": (DeepMSEVAE, deep_mse_loss),
    "day37": (Day37VAE, day37_loss),
}


# ------------------------------------------------------------------ google/flax examples/vae (Linen)
class FlaxEncoder(nn.Module):
    """examples/vae: fc1 Dense(500) + relu, fc2_mean and fc2_logvar Dense(latents)."""

    latents: int = 20

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Dense(500, name="fc1")(x))
        return nn.Dense(self.latents, name="fc2_mean")(x), nn.Dense(self.latents, name="fc2_logvar")(x)


class FlaxDecoder(nn.Module):
    """examples/vae: fc1 Dense(500) + relu, fc2 Dense(784) logits."""

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        return nn.Dense(784, name="fc2")(nn.relu(nn.Dense(500, name="fc1")(z)))


class FlaxVAE(nn.Module):
    """examples/vae's VAE with injected eps: (logits, mean, logvar)."""

    latents: int = 20

    def setup(self) -> None:
        self.encoder = FlaxEncoder(self.latents)
        self.decoder = FlaxDecoder()

    def __call__(self, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        mean, logvar = self.encoder(x)
        z = mean + eps * jnp.exp(0.5 * logvar)
        return self.decoder(z), mean, logvar


def flax_examples_loss(params: dict, x: jax.Array, eps: jax.Array) -> jax.Array:
    """examples/vae: mean over the batch of binary_cross_entropy_with_logits + kl_divergence."""
    out: Any = FlaxVAE().apply({"params": params}, x, eps)  # flax types apply loosely
    logits, mean, logvar = out
    log_p = nn.log_sigmoid(logits)  # the example's binary_cross_entropy_with_logits, log(1-p) via expm1
    bce = -jnp.sum(x * log_p + (1.0 - x) * jnp.log(-jnp.expm1(log_p)), axis=-1)
    kld = -0.5 * jnp.sum(1 + logvar - jnp.square(mean) - jnp.exp(logvar), axis=-1)
    return bce.mean() + kld.mean()
