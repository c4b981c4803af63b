"""Image resizing in numpy, exactly as Pillow's BILINEAR on float ("F" mode) images.

Pillow resamples each axis separately with the triangle filter stretched by the scale factor when it
shrinks (antialiased: each output pixel averages every input pixel under its footprint) and unstretched
when it grows. Output pixel i of an axis of n_in -> n_out has its centre at c = (i + 0.5) n_in / n_out in
input coordinates; input pixel j (centre j + 0.5) gets weight tri((j + 0.5 - c) / s), s = max(n_in / n_out,
1), tri(t) = max(1 - |t|, 0), over the pixels inside the image, normalized to sum 1. Upscaling (s = 1) this
is torch's F.interpolate(mode="bilinear", align_corners=False, antialias=False) (edge pixels repeat);
downscaling it is F.interpolate(..., antialias=True) and torchvision's Resize on PIL images (up to the
8-bit rounding Pillow does on uint8 images). Weights are float64; images stay float32.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from jax_vae.common.errors import DataError

if TYPE_CHECKING:
    import numpy.typing as npt


@functools.cache
def axis_weights(n_in: int, n_out: int) -> npt.NDArray[np.float64]:
    """The [n_out, n_in] float64 resampling matrix of one axis (rows sum to 1), Pillow's precompute_coeffs."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"axis sizes must be >= 1, got {n_in} -> {n_out}")
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale  # [n_out]
    t = (np.arange(n_in)[None, :] + 0.5 - centers[:, None]) / stretch  # [n_out, n_in]
    w = np.maximum(1.0 - np.abs(t), 0.0)
    # Pillow's support window int(c -/+ support + 0.5) drops no pixel with a non-zero weight
    w /= w.sum(1, keepdims=True)
    w.setflags(write=False)
    return w


def resize_images(x: np.ndarray, out_h: int, out_w: int) -> npt.NDArray[np.float32]:
    """[N, H, W, C] -> [N, out_h, out_w, C] float32, Pillow BILINEAR per axis (rows, then columns)."""
    if x.ndim != 4:
        raise ValueError(f"resize_images wants [N, H, W, C], got shape {x.shape}")
    wh = axis_weights(x.shape[1], out_h)  # [out_h, H]
    ww = axis_weights(x.shape[2], out_w)  # [out_w, W]
    planes = np.moveaxis(x, 3, 1).astype(np.float64)  # [N, C, H, W]
    out = wh @ planes @ ww.T  # [N, C, out_h, out_w]: batched BLAS matmuls
    return np.asarray(np.moveaxis(out, 1, 3), np.float32)  # [N, out_h, out_w, C]


def resize_flat(x: np.ndarray, shape: tuple[int, ...], channels: int, size: int, where: str) -> np.ndarray:
    """Flat [N, H * W * C] images (H, W = shape; flat order H, W, C as NHWC flattens) resized to
    [N, size * size * C] float32; DataError when the images' shape is unknown or does not fit."""
    if len(shape) != 2 or shape[0] * shape[1] * channels != x.shape[1]:
        raise DataError(
            f"{where}: cannot resize images of unknown shape ({x.shape[1]} values per image, shape "
            f"{tuple(shape) or 'not recorded'}, {channels} channel(s)); give [N, H, W] arrays or image files"
        )
    h, w = shape
    if (h, w) == (size, size):
        return x
    out = np.empty((x.shape[0], size * size * channels), np.float32)
    for start in range(0, x.shape[0], 4096):  # bounded float64 temporaries
        block = x[start : start + 4096].reshape(-1, h, w, channels)  # [n, H, W, C]
        out[start : start + 4096] = resize_images(block, size, size).reshape(len(block), -1)
    return out
