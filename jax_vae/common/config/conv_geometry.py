"""Convolution padding arithmetic shared by both twins (framework-free: integers only).

Every padding form is reduced to explicit (low, high) zero padding per spatial dimension, which
both frameworks then apply the same way:

- torch integer padding p: (p, p);
- 'valid': (0, 0);
- TF/Keras 'same': output ceil(n / s); total = max((ceil(n / s) - 1) s + k - n, 0), low = total // 2
  and the odd one on the high side (bottom / right), as TensorFlow's kernel_shape_util does. With
  stride 2 on an even size this is asymmetric: n = 8, k = 3 pads (0, 1).

A transposed convolution is the gradient (w.r.t. its input) of a forward convolution. It is computed
as a stride-1 correlation of the stride-dilated input (s - 1 zeros between elements) with the
spatially flipped kernel, padded by (k - 1 - low_f, k - 1 - high_f + extra), where (low_f, high_f) is
the forward conv's padding and `extra` the output positions the forward conv's floor division lost:

- torch (padding p, output_padding op): (k - 1 - p, k - 1 - p + op), output (n - 1) s - 2p + k + op;
- Keras Conv2DTranspose 'same' / 'valid' (output_padding None): the gradient of the 'same' / 'valid'
  forward conv whose input is n s ('same') or n s + max(k - s, 0) ('valid') long.
"""

from __future__ import annotations

from typing import Literal

PaddingMode = Literal["same", "valid"]
Padding = int | PaddingMode  # one integer (torch, both sides) or a TF/Keras string
Pair = tuple[int, int]


def pair(value: int | tuple[int, int], what: str) -> Pair:
    """(h, w) from an int (both dimensions) or a 2-tuple; ValueError names `what` otherwise."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value
    raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")


def conv_fans(kind: str, in_channels: int, out_channels: int, kernel_size: Pair) -> int:
    """torch's fan_in: in kh kw for a conv ('conv'), out kh kw for a transposed one ('conv_transpose':
    torch reads weight dim 1, which is `out` in its transposed layout [in, out, kh, kw])."""
    if kind not in ("conv", "conv_transpose"):
        raise ValueError(f"kind must be 'conv' or 'conv_transpose', got {kind!r}")
    return (in_channels if kind == "conv" else out_channels) * kernel_size[0] * kernel_size[1]


def _check_padding(padding: Padding) -> None:
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int >= 0, 'same' or 'valid', got {padding!r}")
    elif padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")


def conv_padding(size: int, kernel: int, stride: int, padding: Padding) -> Pair:
    """(low, high) zero padding of one spatial dimension of a forward convolution."""
    _check_padding(padding)
    if isinstance(padding, int):
        return padding, padding
    if padding == "valid":
        return 0, 0
    out = -(-size // stride)  # ceil(n / s)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2  # the odd one at the bottom / right (TensorFlow)


def conv_output_size(size: int, kernel: int, stride: int, padding: Padding) -> int:
    """floor((n + low + high - k) / s) + 1 positions; ValueError if the kernel does not fit."""
    low, high = conv_padding(size, kernel, stride, padding)
    if size + low + high < kernel:
        raise ValueError(f"kernel {kernel} is larger than the padded input {size + low + high}")
    return (size + low + high - kernel) // stride + 1


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, padding: Padding, output_padding: int = 0
) -> int:
    """torch: (n - 1) s - 2p + k + op; Keras 'same': n s; Keras 'valid': n s + max(k - s, 0)."""
    _check_padding(padding)
    if isinstance(padding, str):
        if output_padding:
            raise ValueError(f"output_padding must be 0 with padding {padding!r} (Keras output_padding=None)")
        return size * stride + (max(kernel - stride, 0) if padding == "valid" else 0)
    if not 0 <= output_padding < stride:
        raise ValueError(f"output_padding must be in [0, stride {stride}), got {output_padding}")
    out = (size - 1) * stride - 2 * padding + kernel + output_padding
    if out < 1:
        raise ValueError(f"transposed conv output size {out} < 1 (input {size}, padding {padding})")
    return out


def conv_transpose_padding(
    size: int, kernel: int, stride: int, padding: Padding, output_padding: int = 0
) -> Pair:
    """(low, high) padding of the stride-dilated input of a transposed conv (may be negative: a crop).

    With it, out = (n - 1) s + 1 + low + high - k + 1 positions of a stride-1 correlation with the
    flipped kernel: the gradient of the forward conv from `out` positions back to `size`.
    """
    out = conv_transpose_output_size(size, kernel, stride, padding, output_padding)
    low_f = padding if isinstance(padding, int) else conv_padding(out, kernel, stride, padding)[0]
    low = kernel - 1 - low_f
    return low, out + kernel - 1 - low - ((size - 1) * stride + 1)
