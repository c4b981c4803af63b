"""The PyTorch VAEs: MLP and conv encoders / decoders, the VAE built from them, and its layers.

Mirror of jax_vae/linen (same file names, class, layer and parameter names).
"""

from __future__ import annotations

from torch_reference.nn.conv_layers import BatchNorm2d, Conv2d, ConvTranspose2d
from torch_reference.nn.conv_models import ConvDecoder, ConvEncoder
from torch_reference.nn.models import NETWORKS, VAE, Decoder, Encoder, init_params

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
]
