"""The Flax Linen VAEs: MLP and conv encoders / decoders, the VAE built from them, its layers and weights.

Mirror of jax_vae/nnx (the same modules in Flax NNX) and torch_reference/nn (PyTorch): the same file
names, class, layer and parameter names.
"""

from __future__ import annotations

from jax_vae.linen.conv_layers import BatchNorm2d, Conv2d, ConvTranspose2d
from jax_vae.linen.conv_models import ConvDecoder, ConvEncoder
from jax_vae.linen.models import (
    NETWORKS,
    VAE,
    Decoder,
    Encoder,
    init_params,
    init_variables,
    init_weights,
    split_weights,
    variables,
    weights,
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
    "init_params",
    "init_variables",
    "init_weights",
    "split_weights",
    "variables",
    "weights",
]
