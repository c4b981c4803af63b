"""The convolution and BatchNorm math both JAX model APIs (jax_vae.linen, jax_vae.nnx) call, NHWC.

conv2d / conv_transpose2d are a jax.custom_vjp over XLA's convolutions whose backward on CPU only
(lax.platform_dependent; other platforms keep XLA's own derivative) computes the kernel gradient as
one matmul per tap over the valid (output, tap) pairs and a transposed conv's input gradient as the
conv it is the adjoint of: reverse mode (jax.grad, jax.vjp, under jit and lax.scan) works, forward
mode (jax.jvp, jax.jacfwd) does not. batch_norm / batch_stats / running_update are BatchNorm2d with
torch's semantics (biased variance to normalize, the unbiased one into the running statistics).
JAX-only: the PyTorch twin calls torch.nn.functional.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from jax_vae.functional import init_fns

Array = jax.Array
Pads = Sequence[tuple[int, int]]  # [(low_h, high_h), (low_w, high_w)]
_DIMS = ("NHWC", "HWIO", "NHWC")


def conv2d(x: Array, kernel: Array, bias: Array, stride: tuple[int, int], pads: Pads) -> Array:
    """y = cross-correlation(zero-pad(x, pads), kernel) strided + bias; x [B, H, W, I] -> [B, H', W', O]."""
    x, kernel, bias = promote_dtype(x, kernel, bias)  # as Flax's own layers: the widest dtype
    y = _conv("conv", x, kernel, tuple(stride), tuple(tuple(p) for p in pads))
    return y + bias  # [B, H', W', O]


def conv_transpose2d(x: Array, kernel: Array, bias: Array, stride: tuple[int, int], pads: Pads) -> Array:
    """The gradient of conv2d w.r.t. its input, plus bias; x [B, H, W, I] -> [B, H', W', O].

    lax.conv_transpose with transpose_kernel=True flips the kernel [kh, kw, O, I] spatially and swaps
    it to [kh, kw, I, O], then runs a stride-1 correlation of the input dilated by `stride`
    (lhs_dilation) with explicit padding `pads` = common.conv.conv_transpose_padding: torch's
    (k - 1 - p, k - 1 - p + output_padding) or Keras' 'same' / 'valid' pairs. That is the adjoint
    of the forward conv (x -> conv2d with padding p, stride s): test_conv_layer_parity checks it
    against jax.vjp of that conv, and against torch's ConvTranspose2d, in float64.
    """
    x, kernel, bias = promote_dtype(x, kernel, bias)
    y = _conv("conv_transpose", x, kernel, tuple(stride), tuple(tuple(p) for p in pads))
    return y + bias  # [B, H', W', O]


def xla_conv(x: Array, kernel: Array, stride: tuple[int, int], pads: Pads) -> Array:
    return lax.conv_general_dilated(x, kernel, stride, pads, dimension_numbers=_DIMS)


def xla_transposed_conv(x: Array, kernel: Array, stride: tuple[int, int], pads: Pads) -> Array:
    return lax.conv_transpose(x, kernel, stride, pads, dimension_numbers=_DIMS, transpose_kernel=True)


_XLA_OPS = {"conv": xla_conv, "conv_transpose": xla_transposed_conv}
# False: XLA's own derivative on every platform (benchmarks/flops' check against XLA's cost analysis).
CPU_GRADIENTS = True


@partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def _conv(kind: str, x: Array, kernel: Array, stride: tuple[int, int], pads: Pads) -> Array:
    """XLA's conv (kind 'conv') or transposed conv; its kernel gradient by taps on CPU (_conv_bwd)."""
    return _XLA_OPS[kind](x, kernel, stride, pads)


def _conv_fwd(
    kind: str, x: Array, kernel: Array, stride: tuple[int, int], pads: Pads
) -> tuple[Array, tuple[Array, Array]]:
    return _XLA_OPS[kind](x, kernel, stride, pads), (x, kernel)


def _conv_bwd(
    kind: str, stride: tuple[int, int], pads: Pads, res: tuple[Array, Array], g: Array
) -> tuple[Array, Array]:
    """XLA's own dx and dK, except on CPU: dK by per-tap matmuls, a transposed conv's dx as the conv
    it is the adjoint of.

    XLA:CPU runs a kernel-gradient convolution on a slow path when it is lhs-dilated (a transposed
    conv's) or inside a loop (the lax.scan of `train --jit scan`), and a transposed conv's input
    gradient inside a loop: tf-cvae's decoder.deconv_1 at batch 32, dK 61 ms against 1.4 ms by taps,
    dx in a scan 47 ms against 2.7 ms (benchmarks/investigations/conv_grad.py). Same sums, in
    another order.
    """
    x, kernel = res
    op = _XLA_OPS[kind]
    k = (kernel.shape[0], kernel.shape[1])
    # a transposed conv's adjoint: the conv with its kernel [kh, kw, O, I] as HWIO and padding `low`
    low = [kk - 1 - p[0] for kk, p in zip(k, pads)]

    def xla_grads(x: Array, g: Array) -> tuple[Array, Array]:
        return jax.vjp(lambda x_, k_: op(x_, k_, stride, pads), x, kernel)[1](g)

    def cpu_grads(x: Array, g: Array) -> tuple[Array, Array]:
        if kind == "conv":
            dx = jax.vjp(lambda x_: op(x_, kernel, stride, pads), x)[1](g)[0]
            return dx, _kernel_grad_by_taps(x, g, stride, (pads[0][0], pads[1][0]), k)
        high = [
            (n - 1) * s + kk - size - lo
            for n, s, kk, size, lo in zip(x.shape[1:3], stride, k, g.shape[1:3], low)
        ]
        dx = xla_conv(g, kernel, stride, list(zip(low, high)))  # [B, H, W, I]
        return dx, _kernel_grad_by_taps(g, x, stride, (low[0], low[1]), k)  # roles swapped

    if not CPU_GRADIENTS:
        return xla_grads(x, g)
    dx, dk = lax.platform_dependent(x, g, cpu=cpu_grads, default=xla_grads)
    return dx, dk


_conv.defvjp(_conv_fwd, _conv_bwd)


def _kernel_grad_by_taps(
    inp: Array, g: Array, stride: tuple[int, int], low: tuple[int, int], k: tuple[int, int]
) -> Array:
    """dK[a, b, c, d] = sum_{n, q} inp[n, s q + (a, b) - low, c] g[n, q, d] over the (q, tap) pairs
    that read a real input element (none of the zero padding): one [C, D] matmul per tap.

    The kernel gradient of y = conv2d(inp, K, stride s, low padding `low`) with g = dL/dy
    [B, Hq, Wq, D], inp [B, H, W, C] -> [kh, kw, C, D]; for a transposed conv (that conv's adjoint)
    inp is dL/dy and g the transposed conv's input.
    """
    c, d = inp.shape[3], g.shape[3]
    ranges = [
        [_tap_range(t, s, lo, size, nq) for t in range(kk)]
        for s, lo, size, nq, kk in zip(stride, low, inp.shape[1:3], g.shape[1:3], k)
    ]  # per axis, per tap: (first q, last q) or None
    rows = []
    for rh in ranges[0]:
        row = []
        for rw in ranges[1]:
            if rh is None or rw is None:
                row.append(jnp.zeros((c, d), jnp.result_type(inp, g)))  # the tap reads padding only
                continue
            (qh0, qh1, xh0), (qw0, qw1, xw0) = rh, rw
            x_tap = inp[
                :,
                xh0 : xh0 + stride[0] * (qh1 - qh0) + 1 : stride[0],
                xw0 : xw0 + stride[1] * (qw1 - qw0) + 1 : stride[1],
            ]
            row.append(jnp.einsum("nhwc,nhwd->cd", x_tap, g[:, qh0 : qh1 + 1, qw0 : qw1 + 1]))  # [C, D]
        rows.append(jnp.stack(row))
    return jnp.stack(rows)  # [kh, kw, C, D]


def _tap_range(t: int, s: int, low: int, size: int, nq: int) -> tuple[int, int, int] | None:
    """(q0, q1, x0): the outputs q0..q1 whose tap t reads input s q + t - low in [0, size), x0 the first."""
    q0 = max(0, -((t - low) // s))  # ceil((low - t) / s)
    q1 = min(nq - 1, (size - 1 + low - t) // s)
    return None if q1 < q0 else (q0, q1, s * q0 + t - low)


def batch_norm(x: Array, scale: Array, bias: Array, mean: Array, var: Array, eps: float) -> Array:
    """(x - mean) / sqrt(var + eps) * scale + bias over the channel axis; x [B, H, W, C]."""
    return (x - mean) * lax.rsqrt(var + eps) * scale + bias


def batch_stats(x: Array) -> tuple[Array, Array, Array]:
    """(mean, biased var, unbiased var) [C] over the B H W positions of x [B, H, W, C]."""
    n = x.shape[0] * x.shape[1] * x.shape[2]
    mean = jnp.mean(x, axis=(0, 1, 2))  # [C]
    var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))  # [C], biased: torch normalizes with it
    return mean, var, var * (n / max(n - 1, 1))


def running_update(running: Array, batch: Array, momentum: float) -> Array:
    """torch's exponential moving average: (1 - momentum) running + momentum batch, in running's dtype."""
    return ((1.0 - momentum) * running + momentum * lax.stop_gradient(batch)).astype(running.dtype)


def initializer(init: str, fan_in: int, which: int) -> Callable[..., Array]:
    return init_fns(init, fan_in)[which]


def check_channels(x: Array, channels: int) -> None:
    if x.ndim != 4 or x.shape[-1] != channels:
        raise ValueError(f"expected NHWC input with {channels} channels, got shape {x.shape}")
