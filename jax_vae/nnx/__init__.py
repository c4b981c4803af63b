"""The Flax NNX VAEs: the Linen models' twins over the same params tree, and NNX's own step styles.

Mirror of jax_vae/linen and torch_reference/nn (same file names, classes, layer and parameter
names); `step` adds the nnx.Optimizer + nnx.jit step and the split / merge functional step.
"""

from __future__ import annotations

from jax_vae.nnx.conv_layers import BatchNorm2d, Conv2d, ConvTranspose2d
from jax_vae.nnx.conv_models import ConvDecoder, ConvEncoder
from jax_vae.nnx.models import (
    NETWORKS,
    VAE,
    Decoder,
    Encoder,
    abstract_model,
    from_linen_params,
    init_model,
    loss_fn,
    params_loss,
    to_linen_params,
)

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "ConvDecoder",
    "ConvEncoder",
    "NETWORKS",
    "VAE",
    "Decoder",
    "Encoder",
    "abstract_model",
    "from_linen_params",
    "init_model",
    "loss_fn",
    "params_loss",
    "to_linen_params",
]
