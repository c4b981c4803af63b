"""Parity set-up of a small conv encoder / decoder around a Linear pair, for the flatten order:
conv -> flatten -> Linear (common.convert's linear_from_chw) and Linear -> reshape to C x H x W ->
transposed conv (linear_to_chw), on torch, Linen and NNX, with conv_harness' conventions.

Import only after `parity_tests.conftest` (or `report`) has set jax_enable_x64 and matmul precision.
"""

from __future__ import annotations

import functools
import typing
from typing import Any

import flax.linen as nn
import jax
import torch
from flax import nnx

from jax_vae.common.config import architecture
from jax_vae.common.weights import convert
from jax_vae.linen import conv_layers as jc
from jax_vae.nnx import conv_layers as nc
from parity_tests.conv_harness import (
    BATCH,
    CONV_IMAGE,
    IN_CHANNELS,
    JaxLayer,
    Pairs,
    _grad,
    _normal,
    jax_value_and_grads,
    nhwc,
)
from parity_tests.harness import DTYPES
from torch_reference.nn import conv_layers as tc

# A conv encoder and decoder around a latent Linear pair: conv -> flatten -> Linear (linear_from_chw),
# Linear -> reshape to C x H x W -> transposed conv (linear_to_chw). The hidden image is 4 x 4 x 5.
HIDDEN_CHW = (4, 4, 5)
LATENT = 6


def flatten_specs(permute: bool = True) -> list[architecture.LayerSpec]:
    """The converter's specs of the flatten model; permute=False maps both Linears as plain ones
    (what a converter ignoring the flatten order does: the test shows it fails parity)."""
    c, h, w = HIDDEN_CHW
    kinds: tuple[architecture.LayerKind, architecture.LayerKind] = (
        ("linear_from_chw", "linear_to_chw") if permute else ("linear", "linear")
    )
    chw = HIDDEN_CHW if permute else None
    return [
        architecture.LayerSpec("enc.conv", "conv", IN_CHANNELS, c, (3, 3)),
        architecture.LayerSpec("enc.fc", kinds[0], c * h * w, LATENT, chw=chw),
        architecture.LayerSpec("dec.fc", kinds[1], LATENT, c * h * w, chw=chw),
        architecture.LayerSpec("dec.convt", "conv_transpose", c, IN_CHANNELS, (3, 3)),
    ]


def torch_flatten_model() -> torch.nn.ModuleDict:
    c, h, w = HIDDEN_CHW
    enc = {"conv": tc.Conv2d(IN_CHANNELS, c, 3, 2, 1), "fc": torch.nn.Linear(c * h * w, LATENT)}
    dec = {"fc": torch.nn.Linear(LATENT, c * h * w), "convt": tc.ConvTranspose2d(c, IN_CHANNELS, 3, 2, 1, 1)}
    return torch.nn.ModuleDict({"enc": torch.nn.ModuleDict(enc), "dec": torch.nn.ModuleDict(dec)})


def _torch_flatten_forward(model: torch.nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    c, h, w = HIDDEN_CHW
    m = typing.cast(Any, model)
    z = m["enc"]["fc"](m["enc"]["conv"](x).flatten(1))  # [B, C*H*W] in (c, h, w) order -> [B, Z]
    return m["dec"]["convt"](m["dec"]["fc"](z).view(-1, c, h, w))  # [B, 3, 8, 10]


class FlattenLinen:
    """The flatten model on Linen layers (each applied to its params subtree); NHWC flatten (h, w, c)."""

    def apply(self, variables: dict, x: jax.Array) -> jax.Array:
        p, (c, h, w) = variables["params"], HIDDEN_CHW

        def run(layer: nn.Module, params: dict, h: jax.Array) -> Any:
            return layer.apply({"params": params}, h)

        hid = run(jc.Conv2d(IN_CHANNELS, c, 3, 2, 1), p["enc"]["conv"], x)  # [B, H, W, C]
        z = run(nn.Dense(LATENT), p["enc"]["fc"], hid.reshape(x.shape[0], -1))  # (h, w, c) order
        hid = run(nn.Dense(c * h * w), p["dec"]["fc"], z).reshape(-1, h, w, c)
        return run(jc.ConvTranspose2d(c, IN_CHANNELS, 3, 2, 1, 1), p["dec"]["convt"], hid)


class _NnxPart(nnx.Module):
    def __init__(self, **layers: nnx.Module) -> None:
        for name, layer in layers.items():
            setattr(self, name, layer)


class FlattenNnx(nnx.Module):
    """The flatten model on NNX layers: state paths enc.conv, enc.fc, dec.fc, dec.convt."""

    def __init__(self, dtype: Any) -> None:
        c, h, w = HIDDEN_CHW
        r, d = nnx.Rngs(0), dict(param_dtype=dtype)
        self.enc = _NnxPart(
            conv=nc.Conv2d(IN_CHANNELS, c, 3, 2, 1, rngs=r, **d),
            fc=nnx.Linear(c * h * w, LATENT, rngs=r, **d),
        )
        self.dec = _NnxPart(
            fc=nnx.Linear(LATENT, c * h * w, rngs=r, **d),
            convt=nc.ConvTranspose2d(c, IN_CHANNELS, 3, 2, 1, 1, rngs=r, **d),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        c, h, w = HIDDEN_CHW
        enc, dec = typing.cast(Any, self.enc), typing.cast(Any, self.dec)
        z = enc.fc(enc.conv(x).reshape(x.shape[0], -1))  # NHWC flatten: (h, w, c) order
        return dec.convt(dec.fc(z).reshape(-1, h, w, c))


@functools.cache
def flatten_pair(dtype: str, api: str, permute: bool = True) -> Pairs:
    """'out', 'grad.x' and every parameter gradient 'grad.<prefix>.<leaf>' of the flatten model."""
    np_dtype, torch_dtype = DTYPES[dtype]
    x = _normal(dtype, (BATCH, IN_CHANNELS, *CONV_IMAGE), seed=4)
    # --- torch half
    torch.manual_seed(0)
    model = torch_flatten_model().to(torch_dtype)
    xt = torch.from_numpy(x).requires_grad_()
    yt = _torch_flatten_forward(model, xt)
    ct = _normal(dtype, tuple(yt.shape), seed=5)
    (yt * torch.from_numpy(ct)).sum().backward()
    specs = flatten_specs(permute)
    variables = convert.torch_to_flax_variables(model.state_dict(), specs, "flatten")
    torch_grads = {k: _grad(p) for k, p in model.named_parameters()}
    tg = convert.torch_to_flax_variables(torch_grads, specs, "flatten grads")["params"]
    # --- JAX half
    jl = JaxLayer(api, FlattenLinen(), lambda: FlattenNnx(np_dtype), variables, {})
    yj, _, gp, gx = jax_value_and_grads(jl, *jl.initial(), nhwc(x), nhwc(ct))
    pairs: Pairs = {"out": (yj, nhwc(yt.detach().numpy())), "grad.x": (gx, nhwc(_grad(xt)))}
    for s in specs:
        module, layer = s.prefix.split(".")
        for leaf in ("kernel", "bias"):
            pairs[f"grad.{s.prefix}.{leaf}"] = (gp[module][layer][leaf], tg[module][layer][leaf])
    return pairs
