"""The layers of a convolutional VAE (arch="conv"), planned once from its VAEConfig for both twins.

Encoder: per `conv_channels` c_i, `encoder.conv_i` Conv2d(c_{i-1} -> c_i, conv_kernel, conv_stride,
conv_padding) [-> `encoder.norm_i` BatchNorm2d] -> activation; flatten; the head from the flattened
map: `encoder.head` (2Z, split) or `encoder.mean` + `encoder.<scale_param>` (Z each), Linears after a
flatten (the converter permutes their columns between torch's (C, H, W) and NHWC's (H, W, C) order).
Decoder: `decoder.input` Linear(Z -> C0*H0*W0) reshaped to decoder_start (C0, H0, W0) [-> activation];
per `deconv_channels` c_i, `decoder.deconv_i` ConvTranspose2d(c_{i-1} -> c_i, conv_kernel, conv_stride,
deconv_padding, output_padding) [-> `decoder.norm_i`] -> activation; `decoder.out` the stride-1
final_layer (ConvTranspose2d or Conv2d, conv_kernel, deconv_padding) to image_channels; decoder_output.
Framework-free: integers only (jax_vae.common.config.conv_geometry does the padding arithmetic).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Protocol

from jax_vae.common.config.conv_geometry import Padding, conv_output_size, conv_transpose_output_size

CHW = tuple[int, int, int]
LayerKind = Literal["linear", "conv", "conv_transpose", "batchnorm", "linear_from_chw", "linear_to_chw"]


class ConvFields(Protocol):
    """The VAEConfig fields a conv layer plan reads (VAEConfig has them; vae_config checks a conv
    config through this module, so the plan takes the fields, not the class)."""

    @property
    def name(self) -> str: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def image_shape(self) -> tuple[int, ...]: ...
    @property
    def image_channels(self) -> int: ...
    @property
    def conv_channels(self) -> tuple[int, ...]: ...
    @property
    def conv_kernel(self) -> int: ...
    @property
    def conv_stride(self) -> int: ...
    @property
    def conv_padding(self) -> str: ...
    @property
    def deconv_channels(self) -> tuple[int, ...]: ...
    @property
    def deconv_padding(self) -> str: ...
    @property
    def output_padding(self) -> int: ...
    @property
    def decoder_start(self) -> tuple[int, ...]: ...
    @property
    def final_layer(self) -> str: ...
    @property
    def batch_norm(self) -> bool: ...
    @property
    def encoder_head(self) -> str: ...
    @property
    def scale_param(self) -> str: ...
    @property
    def latent_dim(self) -> int: ...
    @property
    def encoder_hidden(self) -> tuple[int, ...]: ...
    @property
    def decoder_hidden(self) -> tuple[int, ...]: ...
    @property
    def micro_batch(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One torch layer: its state_dict prefix ('encoder.conv_0', also the Flax path), kind and sizes
    (features: Linear fan_in / fan_out, or channels; batchnorm has in_features == out_features)."""

    prefix: str
    kind: LayerKind
    in_features: int
    out_features: int
    kernel_size: tuple[int, int] = (1, 1)
    chw: tuple[int, int, int] | None = None  # (C, H, W) of the flatten input / the reshape output


def padding(text: str, field: str) -> Padding:
    """A padding field: 'same' / 'valid', or torch's integer padding written as digits."""
    if text in ("same", "valid"):
        return text  # type: ignore[return-value]  # narrowed by the test above
    if text.isdigit():
        return int(text)
    raise ValueError(f"{field} must be 'same', 'valid' or an integer >= 0, got {text!r}")


def image_hw(cfg: ConvFields) -> tuple[int, int]:
    """(H, W) of the images: cfg.image_shape, else the square of input_dim / image_channels."""
    if cfg.image_shape:
        h, w = cfg.image_shape
        return h, w
    side = math.isqrt(cfg.input_dim // cfg.image_channels)
    return side, side


@dataclasses.dataclass(frozen=True)
class ConvPlan:
    """Every layer of a conv VAE in torch module order, with the feature-map shapes between them."""

    specs: tuple[LayerSpec, ...]
    encoder_maps: tuple[CHW, ...]  # (C, H, W) after each encoder conv; the last one is flattened
    decoder_maps: tuple[CHW, ...]  # decoder_start, then after each transposed conv, then the output


def plan(cfg: ConvFields) -> ConvPlan:
    """The layers and shapes of `cfg` (ValueError naming the field when they do not fit)."""
    k, s = cfg.conv_kernel, cfg.conv_stride
    enc_pad, dec_pad = (
        padding(cfg.conv_padding, "conv_padding"),
        padding(cfg.deconv_padding, "deconv_padding"),
    )
    h, w = image_hw(cfg)
    specs: list[LayerSpec] = []
    maps: list[CHW] = []
    c = cfg.image_channels
    for i, out in enumerate(cfg.conv_channels):
        specs.append(LayerSpec(f"encoder.conv_{i}", "conv", c, out, (k, k)))
        if cfg.batch_norm:
            specs.append(LayerSpec(f"encoder.norm_{i}", "batchnorm", out, out))
        h, w = (conv_output_size(n, k, s, enc_pad) for n in (h, w))
        c = out
        maps.append((c, h, w))
    flat, z = c * h * w, cfg.latent_dim
    heads = [("head", 2 * z)] if cfg.encoder_head == "split" else [("mean", z), (cfg.scale_param, z)]
    specs += [LayerSpec(f"encoder.{name}", "linear_from_chw", flat, n, chw=(c, h, w)) for name, n in heads]
    c0, h, w = _start(cfg)
    specs.append(LayerSpec("decoder.input", "linear_to_chw", z, c0 * h * w, chw=(c0, h, w)))
    dec: list[CHW] = [(c0, h, w)]
    c = c0
    for i, out in enumerate(cfg.deconv_channels):
        specs.append(LayerSpec(f"decoder.deconv_{i}", "conv_transpose", c, out, (k, k)))
        if cfg.batch_norm:
            specs.append(LayerSpec(f"decoder.norm_{i}", "batchnorm", out, out))
        h, w = (conv_transpose_output_size(n, k, s, dec_pad, cfg.output_padding) for n in (h, w))
        c = out
        dec.append((c, h, w))
    transposed = cfg.final_layer == "conv_transpose"
    specs.append(
        LayerSpec("decoder.out", "conv_transpose" if transposed else "conv", c, cfg.image_channels, (k, k))
    )
    if not transposed:
        h, w = (conv_output_size(n, k, 1, dec_pad) for n in (h, w))
    else:
        h, w = (conv_transpose_output_size(n, k, 1, dec_pad, 0) for n in (h, w))
    dec.append((cfg.image_channels, h, w))
    return ConvPlan(tuple(specs), tuple(maps), tuple(dec))


def module_layers(cfg: ConvFields, module: str) -> dict[str, LayerSpec]:
    """layer name -> LayerSpec of one module ('encoder' or 'decoder'), in forward (state_dict) order."""
    return {s.prefix.split(".")[1]: s for s in plan(cfg).specs if s.prefix.startswith(f"{module}.")}


def conv_settings(cfg: ConvFields, spec: LayerSpec) -> tuple[int, Padding, int]:
    """(stride, padding, output_padding) of a conv or transposed-conv layer: the encoder's take
    conv_padding, the decoder's deconv_padding; `decoder.out` is the stride-1 final layer."""
    final = spec.prefix == "decoder.out"
    stride = 1 if final else cfg.conv_stride
    field = "conv_padding" if spec.prefix.startswith("encoder.") else "deconv_padding"
    extra = cfg.output_padding if spec.kind == "conv_transpose" and not final else 0
    return stride, padding(getattr(cfg, field), field), extra


def _start(cfg: ConvFields) -> CHW:
    if len(cfg.decoder_start) != 3 or min(cfg.decoder_start) < 1:
        raise ValueError(f"{cfg.name}: decoder_start must be (C, H, W) >= 1, got {cfg.decoder_start!r}")
    c, h, w = cfg.decoder_start
    return c, h, w


def check_conv(cfg: ConvFields) -> None:
    """A conv config whose layers fit: at least one conv, no MLP hidden layers, output = input size."""
    if not cfg.conv_channels or min(cfg.conv_channels) < 1:
        raise ValueError(f"{cfg.name}: arch 'conv' needs conv_channels >= 1, got {cfg.conv_channels!r}")
    if min(cfg.deconv_channels, default=1) < 1:
        raise ValueError(f"{cfg.name}: deconv_channels must be >= 1, got {cfg.deconv_channels!r}")
    if cfg.encoder_hidden or cfg.decoder_hidden:
        raise ValueError(
            f"{cfg.name}: arch 'conv' has no MLP hidden layers (set encoder_hidden=, decoder_hidden=)"
        )
    if cfg.conv_kernel < 1 or cfg.conv_stride < 1 or cfg.output_padding < 0:
        raise ValueError(f"{cfg.name}: conv_kernel, conv_stride must be >= 1 and output_padding >= 0")
    if cfg.output_padding and not cfg.deconv_padding.isdigit():
        raise ValueError(f"{cfg.name}: output_padding needs an integer deconv_padding (torch's form)")
    if cfg.batch_norm and cfg.micro_batch:
        raise ValueError(f"{cfg.name}: micro_batch with batch_norm would normalize each chunk on its own")
    try:
        out = plan(cfg).decoder_maps[-1]
    except ValueError as err:
        raise ValueError(f"{cfg.name}: {err}") from None
    want = (cfg.image_channels, *image_hw(cfg))
    if out != want:
        raise ValueError(f"{cfg.name}: the decoder outputs (C, H, W) {out}, the images are {want}")
