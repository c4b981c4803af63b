"""Flax NNX twins of the Linen layers in conv_layers.py: the same names, layouts, math and padding.

JAX-only (like nnx_models.py): the torch twin mirrors conv_layers.py. Each layer's
`nnx.to_pure_dict(nnx.state(layer, nnx.Param))` is its Linen params leaf ({'kernel', 'bias'} or
{'scale', 'bias'}) and BatchNorm2d's `nnx.state(layer, nnx.BatchStat)` its Linen batch_stats leaf
({'mean', 'var'}), so common.convert's output loads into either API. The math is conv_layers'
own functions, so NNX and Linen run the same XLA ops.

BatchNorm2d follows nnx.BatchNorm's conventions: the `use_running_average` attribute (set by
`model.train()` / `model.eval()`, or passed to the call) selects training or evaluation, and a
training call updates its nnx.BatchStat variables in place (pure under nnx.jit / nnx.split).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jax_vae.common.config.conv_geometry import Padding, conv_fans, conv_padding, conv_transpose_padding, pair
from jax_vae.conv_ops import (
    batch_norm,
    batch_stats,
    check_channels,
    conv2d,
    conv_transpose2d,
    initializer,
    running_update,
)

Array = jax.Array


def _conv_params(
    kind: str, shape: tuple[int, int, int, int], init_scheme: str, rngs: nnx.Rngs, dtype: Any
) -> tuple[nnx.Param, nnx.Param]:
    """(kernel `shape`, bias [out]) as nnx.Params drawn from models.init_fns with torch's fan_in."""
    kh, kw, a, b = shape
    in_channels, out_channels = (a, b) if kind == "conv" else (b, a)  # transposed kernel: [kh, kw, O, I]
    fan_in = conv_fans(kind, in_channels, out_channels, (kh, kw))
    kernel = nnx.Param(initializer(init_scheme, fan_in, 0)(rngs.params(), shape, dtype))
    return kernel, nnx.Param(initializer(init_scheme, fan_in, 1)(rngs.params(), (out_channels,), dtype))


class Conv2d(nnx.Module):
    """torch.nn.Conv2d on NHWC: x [B, H, W, in] -> [B, H', W', out] (conv_layers.Conv2d)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: Padding = 0,
        init_scheme: str = "torch",
        *,
        rngs: nnx.Rngs,
        param_dtype: Any = jnp.float32,
    ) -> None:
        self.in_channels, self.kernel_size = in_channels, pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), padding
        conv_padding(1, 1, 1, padding)  # validates the form
        kh, kw = self.kernel_size
        shape = (kh, kw, in_channels, out_channels)
        self.kernel, self.bias = _conv_params("conv", shape, init_scheme, rngs, param_dtype)

    def __call__(self, x: Array) -> Array:
        check_channels(x, self.in_channels)
        pads = [
            conv_padding(n, k, s, self.padding)
            for n, k, s in zip(x.shape[1:3], self.kernel_size, self.stride)
        ]
        return conv2d(x, self.kernel[...], self.bias[...], self.stride, pads)


class ConvTranspose2d(nnx.Module):
    """torch.nn.ConvTranspose2d on NHWC: x [B, H, W, in] -> [B, H', W', out], kernel [kh, kw, out, in]
    (conv_layers.ConvTranspose2d)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: Padding = 0,
        output_padding: int | tuple[int, int] = 0,
        init_scheme: str = "torch",
        *,
        rngs: nnx.Rngs,
        param_dtype: Any = jnp.float32,
    ) -> None:
        self.in_channels, self.kernel_size = in_channels, pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), padding
        self.output_padding = pair(output_padding, "output_padding")
        conv_padding(1, 1, 1, padding)  # validates the form
        kh, kw = self.kernel_size
        shape = (kh, kw, out_channels, in_channels)
        self.kernel, self.bias = _conv_params("conv_transpose", shape, init_scheme, rngs, param_dtype)

    def __call__(self, x: Array) -> Array:
        check_channels(x, self.in_channels)
        pads = [
            conv_transpose_padding(n, k, s, self.padding, op)
            for n, k, s, op in zip(x.shape[1:3], self.kernel_size, self.stride, self.output_padding)
        ]
        return conv_transpose2d(x, self.kernel[...], self.bias[...], self.stride, pads)


class BatchNorm2d(nnx.Module):
    """torch.nn.BatchNorm2d on NHWC, x [B, H, W, C] (conv_layers.BatchNorm2d): training normalizes with
    the biased batch variance and moves `var` toward the unbiased one with torch's momentum 0.1."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        use_running_average: bool = False,
        rngs: nnx.Rngs | None = None,
        param_dtype: Any = jnp.float32,
    ) -> None:
        del rngs  # nothing random: scale 1, bias 0, mean 0, var 1 (torch's reset_parameters)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.use_running_average = use_running_average
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), param_dtype))
        self.var = nnx.BatchStat(jnp.ones((num_features,), param_dtype))

    def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
        check_channels(x, self.num_features)
        eval_mode = self.use_running_average if use_running_average is None else use_running_average
        scale, bias = self.scale[...], self.bias[...]
        if eval_mode:
            return batch_norm(x, scale, bias, self.mean[...], self.var[...], self.eps)
        batch_mean, batch_var, unbiased = batch_stats(x)  # [C] x3
        self.mean[...] = running_update(self.mean[...], batch_mean, self.momentum)
        self.var[...] = running_update(self.var[...], unbiased, self.momentum)
        return batch_norm(x, scale, bias, batch_mean, batch_var, self.eps)
