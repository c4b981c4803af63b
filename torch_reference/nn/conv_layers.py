"""PyTorch convolution layers, NCHW: Conv2d, ConvTranspose2d and BatchNorm2d, extending torch's own
with the TF/Keras 'same' / 'valid' padding forms.

Mirror of jax_vae/linen/conv_layers.py (same class, argument and parameter names). Integer padding runs
torch's own kernels unchanged; string padding is reduced to explicit (low, high) pairs by
common.conv (as the JAX twin does): Conv2d zero-pads the input with them (TF 'same' with stride 2 is
asymmetric, which torch's padding='same' refuses), ConvTranspose2d crops or zero-extends the
unpadded transposed conv to them before adding the bias. Parameters keep torch's layouts:

    Conv2d           weight [out, in, kh, kw], bias [out]
    ConvTranspose2d  weight [in, out, kh, kw], bias [out]
    BatchNorm2d      weight, bias, running_mean, running_var [C], num_batches_tracked []

Gradients are torch's autograd (oneDNN on CPU); the JAX twin's _conv_bwd computes two of them its own
way on XLA:CPU only (speed; same math), which has no counterpart here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jax_vae.common.config.conv_geometry import (
    Padding,
    PaddingMode,
    conv_fans,
    conv_padding,
    conv_transpose_padding,
    pair,
)
from torch_reference.functional import init_fns


@torch.no_grad()
def _reinit(layer: nn.Conv2d | nn.ConvTranspose2d, init_scheme: str, fan_in: int) -> None:
    """Redraw weight and bias with models.init_fns; 'torch' keeps the draws torch's own
    reset_parameters made (the same distributions, and the source's values for a given seed)."""
    if init_scheme == "torch":
        return
    weight_init, bias_init = init_fns(init_scheme, fan_in)
    weight_init(layer.weight)
    bias_init(_bias(layer))


def _bias(layer: nn.Conv2d | nn.ConvTranspose2d) -> Tensor:
    assert layer.bias is not None, "conv layers here always have a bias"
    return layer.bias


def _string_padding(padding: Padding) -> PaddingMode | None:
    """The 'same' / 'valid' form, or None for torch's integer padding (ValueError if neither)."""
    conv_padding(1, 1, 1, padding)  # validates: an int >= 0, 'same' or 'valid'
    return None if isinstance(padding, int) else padding


class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d, x [B, in, H, W] -> [B, out, H', W']; padding an int (torch's own) or
    'same' / 'valid' (TF: 'same' puts the odd padding row/column at the bottom/right)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: Padding = 0,
        init_scheme: str = "torch",
    ) -> None:
        k = pair(kernel_size, "kernel_size")
        string_padding = _string_padding(padding)
        int_padding = 0 if isinstance(padding, str) else padding
        super().__init__(in_channels, out_channels, k, stride=pair(stride, "stride"), padding=int_padding)
        self.string_padding = string_padding
        _reinit(self, init_scheme, conv_fans("conv", in_channels, out_channels, k))

    def forward(self, x: Tensor) -> Tensor:
        if self.string_padding is None:
            return super().forward(x)  # [B, out, H', W']
        pads = [
            conv_padding(n, k, s, self.string_padding)
            for n, k, s in zip(x.shape[2:], self.kernel_size, self.stride)
        ]
        (low_h, high_h), (low_w, high_w) = pads
        x = F.pad(x, (low_w, high_w, low_h, high_h))  # [B, in, H + pads, W + pads]
        return F.conv2d(x, self.weight, self.bias, self.stride)  # [B, out, H', W']


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d, x [B, in, H, W] -> [B, out, H', W'], H' = (H - 1) s - 2p + k
    + output_padding; padding 'same' / 'valid' is Keras Conv2DTranspose (H' = H s for 'same')."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: Padding = 0,
        output_padding: int | tuple[int, int] = 0,
        init_scheme: str = "torch",
    ) -> None:
        k, s = pair(kernel_size, "kernel_size"), pair(stride, "stride")
        extra = pair(output_padding, "output_padding")
        string_padding = _string_padding(padding)
        if string_padding is not None and extra != (0, 0):
            raise ValueError(f"output_padding must be 0 with padding {padding!r} (Keras output_padding=None)")
        int_padding = 0 if isinstance(padding, str) else padding
        super().__init__(in_channels, out_channels, k, s, padding=int_padding, output_padding=extra)
        self.string_padding = string_padding
        _reinit(self, init_scheme, conv_fans("conv_transpose", in_channels, out_channels, k))

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no output_size argument
        if self.string_padding is None:
            return super().forward(x)  # [B, out, H', W']
        k, s = self.kernel_size, self.stride
        pads = [
            conv_transpose_padding(n, kk, ss, self.string_padding) for n, kk, ss in zip(x.shape[2:], k, s)
        ]
        y = F.conv_transpose2d(x, self.weight, None, s)  # pads (k - 1, k - 1): (H - 1) s + k rows
        (low_h, high_h), (low_w, high_w) = pads
        # negative amounts crop, positive ones append rows no kernel tap reaches (exact zeros)
        y = F.pad(y, (low_w - (k[1] - 1), high_w - (k[1] - 1), low_h - (k[0] - 1), high_h - (k[0] - 1)))
        return y + _bias(self)[:, None, None]  # [B, out, H', W']


class BatchNorm2d(nn.BatchNorm2d):
    """torch.nn.BatchNorm2d (affine, tracking running statistics), x [B, C, H, W] -> same shape:
    train mode normalizes with the biased batch variance and moves running_var toward the unbiased
    one with momentum 0.1; eval mode normalizes with the running statistics."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
