"""The size each preset runs at in the parity suite: its own, except where that costs minutes of CPU.

antixk-vanilla (64x64 images, 32..512 channels, ~40 M multiply-adds per image forward) runs with 1/8
of its channels: the same five conv blocks, transposed convs with output_padding, BatchNorm, flatten
and Linear maps, so every layout and semantics difference is exercised; its full size is trained in
tests/training/test_conv_train.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jax_vae.common.config.presets import PRESETS
from jax_vae.common.config.vae_config import VAEConfig

PARITY_SIZES: dict[str, dict[str, Any]] = {
    "antixk-vanilla": dict(
        conv_channels=(4, 8, 16, 32, 64), deconv_channels=(32, 16, 8, 4, 4), decoder_start=(64, 2, 2)
    ),
}


def parity_preset(name: str) -> VAEConfig:
    """PRESETS[name] at its parity size."""
    return dataclasses.replace(PRESETS[name], **PARITY_SIZES.get(name, {}))


def unless_batch_norm(cfg: VAEConfig, why: str) -> VAEConfig:
    """`cfg`, or a pytest skip naming `why` for a BatchNorm preset."""
    import pytest

    if cfg.batch_norm:
        pytest.skip(f"{cfg.name}: {why}")
    return cfg
