"""Flax Linen convolution layers with PyTorch's semantics, NHWC inside: Conv2d, ConvTranspose2d and
BatchNorm2d.

Mirror of torch_reference/nn/conv_layers.py (same class, argument and parameter names). Padding forms
(torch integers, TF/Keras 'same' and 'valid') are reduced to explicit (low, high) pairs by
common.conv, so both twins pad identically. Parameters (kernels in Flax's layouts; common.convert
maps torch's):

    Conv2d           kernel [kh, kw, in, out], bias [out]   (torch weight [out, in, kh, kw])
    ConvTranspose2d  kernel [kh, kw, out, in], bias [out]   (torch weight [in, out, kh, kw])
    BatchNorm2d      params scale, bias [C]; batch_stats mean, var [C]

The pure functions below hold the math; nnx_conv_layers.py calls the same ones. Conv and
transposed conv are a jax.custom_vjp (their CPU gradients, _conv_bwd): reverse mode (jax.grad,
jax.vjp, under jit and lax.scan) works, forward mode (jax.jvp, jax.jacfwd) does not.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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


class Conv2d(nn.Module):
    """torch.nn.Conv2d on NHWC: x [B, H, W, in] -> [B, H', W', out]; padding an int (torch) or
    'same' / 'valid' (TF: 'same' puts the odd padding row/column at the bottom/right)."""

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: Padding = 0
    init_scheme: str = "torch"  # models.init_fns(init_scheme, fan_in) with torch's fan_in (conv_fans)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = k = pair(self.kernel_size, "kernel_size")
        stride = pair(self.stride, "stride")
        check_channels(x, self.in_channels)
        fan_in = conv_fans("conv", self.in_channels, self.out_channels, k)
        shape = (kh, kw, self.in_channels, self.out_channels)
        kernel = self.param("kernel", initializer(self.init_scheme, fan_in, 0), shape, self.param_dtype)
        bias = self.param(
            "bias", initializer(self.init_scheme, fan_in, 1), (self.out_channels,), self.param_dtype
        )
        pads = [conv_padding(n, kk, s, self.padding) for n, kk, s in zip(x.shape[1:3], k, stride)]
        return conv2d(x, kernel, bias, stride, pads)


class ConvTranspose2d(nn.Module):
    """torch.nn.ConvTranspose2d on NHWC: x [B, H, W, in] -> [B, H', W', out], H' = (H - 1) s - 2p + k
    + output_padding; padding 'same' / 'valid' is Keras Conv2DTranspose (H' = H s for 'same')."""

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: Padding = 0
    output_padding: int | tuple[int, int] = 0
    init_scheme: str = "torch"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kh, kw = k = pair(self.kernel_size, "kernel_size")
        stride, extra = pair(self.stride, "stride"), pair(self.output_padding, "output_padding")
        check_channels(x, self.in_channels)
        fan_in = conv_fans("conv_transpose", self.in_channels, self.out_channels, k)
        shape = (kh, kw, self.out_channels, self.in_channels)
        kernel = self.param("kernel", initializer(self.init_scheme, fan_in, 0), shape, self.param_dtype)
        bias = self.param(
            "bias", initializer(self.init_scheme, fan_in, 1), (self.out_channels,), self.param_dtype
        )
        pads = [
            conv_transpose_padding(n, kk, s, self.padding, op)
            for n, kk, s, op in zip(x.shape[1:3], k, stride, extra)
        ]
        return conv_transpose2d(x, kernel, bias, stride, pads)


class BatchNorm2d(nn.Module):
    """torch.nn.BatchNorm2d on NHWC, x [B, H, W, C] -> same shape.

    Training (use_running_average=False, apply with mutable=['batch_stats']): normalize with the
    batch mean and biased variance, and update mean <- (1 - m) mean + m batch_mean, var <- (1 - m) var
    + m unbiased_batch_var (torch's momentum m = 0.1, i.e. Flax's momentum 0.9; Flax's nn.BatchNorm
    stores the biased variance instead). Evaluation: normalize with the running mean and var.
    Initialization leaves the statistics at mean 0, var 1.
    """

    num_features: int
    eps: float = 1e-5
    momentum: float = 0.1
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, use_running_average: bool) -> Array:
        check_channels(x, self.num_features)
        c = (self.num_features,)
        scale = self.param("scale", nn.initializers.ones, c, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, c, self.param_dtype)
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(c, self.param_dtype))
        var = self.variable("batch_stats", "var", lambda: jnp.ones(c, self.param_dtype))
        if use_running_average:
            return batch_norm(x, scale, bias, mean.value, var.value, self.eps)
        batch_mean, batch_var, unbiased = batch_stats(x)  # [C] x3
        if not self.is_initializing():
            mean.value = running_update(mean.value, batch_mean, self.momentum)
            var.value = running_update(var.value, unbiased, self.momentum)
        return batch_norm(x, scale, bias, batch_mean, batch_var, self.eps)
