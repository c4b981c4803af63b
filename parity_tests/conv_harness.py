"""Layer-level parity set-up for the convolution layers (jax_vae/linen/conv_layers.py, nnx_conv_layers.py
against torch_reference/nn/conv_layers.py): one torch layer, its weights copied through
common.convert, the same numpy input and output cotangent on both sides (NCHW for torch, the same
values transposed to NHWC for JAX), and each side's outputs and gradients in the Flax layout.

Import only after `parity_tests.conftest` (or `report`) has set jax_enable_x64 and matmul precision.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from jax_vae.common.config import architecture
from jax_vae.common.weights import convert
from jax_vae.linen import conv_layers as jc
from jax_vae.nnx import conv_layers as nc
from parity_tests.harness import DTYPES
from torch_reference.nn import conv_layers as tc

BATCH, IN_CHANNELS, OUT_CHANNELS = 4, 3, 5  # in != out, so a swapped channel axis cannot pass
CONV_IMAGE = (8, 9)  # H != W, so swapped spatial axes cannot pass; 'same' stride 2 pads H (0, 1), W (1, 1)
CONV_TRANSPOSE_IMAGE = (4, 5)

# name -> constructor arguments shared by the three twins (besides the channels)
CONV_CASES: dict[str, dict[str, Any]] = {
    "pad0": dict(kernel_size=3, stride=1, padding=0),
    "pad1-stride2": dict(kernel_size=3, stride=2, padding=1),  # antixk-vanilla's encoder
    "same-kernel3x2-stride1": dict(kernel_size=(3, 2), stride=1, padding="same"),  # H (1, 1), W (0, 1)
    "same-stride2": dict(kernel_size=3, stride=2, padding="same"),  # TF: H = 8 pads (0, 1), W = 9 (1, 1)
    "valid-stride2": dict(kernel_size=3, stride=2, padding="valid"),  # tf-cvae's encoder
}
CONV_TRANSPOSE_CASES: dict[str, dict[str, Any]] = {
    "pad1-kernel3x2-stride2x1": dict(kernel_size=(3, 2), stride=(2, 1), padding=1),
    "pad1-stride2-outpad1": dict(kernel_size=3, stride=2, padding=1, output_padding=1),  # antixk decoder
    "same-stride2": dict(kernel_size=3, stride=2, padding="same"),  # tf-cvae's decoder (Keras)
    "same-stride1": dict(kernel_size=3, stride=1, padding="same"),  # tf-cvae's logits layer
    "valid-stride2": dict(kernel_size=3, stride=2, padding="valid"),
}
# XLA's CPU backend compiles these tiny programs ~3x faster without LLVM's optimizations (measured
# 0.45-0.8 s -> 0.16-0.28 s per conv gradient on a loaded 2-core CPU); the HLO and its IEEE
# arithmetic are the same (XLA enables no fast-math either way), only the generated loops are slower.
COMPILER_OPTIONS: dict[str, str | bool] = {
    "xla_backend_optimization_level": "0",
    "xla_llvm_disable_expensive_passes": True,
}
LAYERS = {
    "conv": (jc.Conv2d, nc.Conv2d, tc.Conv2d),
    "conv_transpose": (jc.ConvTranspose2d, nc.ConvTranspose2d, tc.ConvTranspose2d),
}
BN_STEPS = 3
DIMS = ("NHWC", "HWIO", "NHWC")  # lax.conv_general_dilated's layouts of the JAX half
Pairs = dict[str, tuple[np.ndarray, np.ndarray]]


def tol_kind(name: str) -> str:
    """The tolerances.TOLERANCES kind of a pair: 'grad' for gradients, else 'forward' (outputs and
    BatchNorm's running statistics, a forward computation)."""
    return "grad" if ".grad." in f".{name}" else "forward"


def _normal(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(DTYPES[dtype][0])


def nhwc(x: np.ndarray) -> np.ndarray:
    """[B, C, H, W] -> [B, H, W, C] (a copy)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _grad(t: torch.Tensor) -> np.ndarray:
    assert t.grad is not None, "backward() left no gradient"
    return t.grad.detach().numpy()


def conv_spec(kind: architecture.LayerKind, prefix: str, layer: Any) -> architecture.LayerSpec:
    """The converter's LayerSpec of a torch conv or transposed-conv layer."""
    kh, kw = layer.kernel_size
    return architecture.LayerSpec(prefix, kind, layer.in_channels, layer.out_channels, (kh, kw))


class JaxLayer:
    """The JAX half of one layer on either API, as a pure function of (params, batch_stats, x):
    Linen's apply (mutable=['batch_stats'] in training) on pure dicts, or nnx.merge of the split
    module's nnx.State (Param, then the rest: BatchStat) and a call of the merged module."""

    graphdef: Any

    def __init__(
        self, api: str, linen: Any, make_nnx: Callable[[], Any], variables: dict, call: dict[str, Any]
    ) -> None:
        self.api, self.call, self.linen = api, call, linen
        self.compiled: Any = None  # jax_value_and_grads' executable
        self.variables = jax.tree.map(jnp.asarray, variables)
        if api == "nnx":  # the module's structure only (nothing drawn), then the converted weights
            nnx_layer = nnx.eval_shape(make_nnx)
            nnx.update(nnx_layer, self.variables["params"])
            if "batch_stats" in variables:
                nnx.update(nnx_layer, self.variables["batch_stats"])
            split = typing.cast(tuple[Any, Any, Any], nnx.split(nnx_layer, nnx.Param, ...))
            self.graphdef, params, stats = split
            self.variables = {"params": params, "batch_stats": stats}

    def initial(self) -> tuple[Any, Any]:
        """(params, batch_stats) in this API's form: pure dicts (Linen) or nnx.State (NNX)."""
        return self.variables["params"], self.variables.get("batch_stats", {})

    def apply(self, params: Any, stats: Any, x: jax.Array) -> tuple[jax.Array, Any]:
        """(y, batch_stats after the call, in the form `stats` came in)."""
        if self.api == "linen":
            variables = {"params": params} | ({"batch_stats": stats} if stats else {})
            if self.call.get("use_running_average") is False:
                y, updated = self.linen.apply(variables, x, mutable=["batch_stats"], **self.call)
                return y, updated["batch_stats"]
            return self.linen.apply(variables, x, **self.call), stats
        # copy=True: fresh Variables at this trace level; without it a BatchStat update inside
        # jax.grad raises TraceContextError (flax 0.12, nnx.BatchNorm alike)
        model = nnx.merge(self.graphdef, params, stats, copy=True)
        y = model(x, **self.call)
        return y, nnx.state(model, nnx.BatchStat)

    def pure(self, tree: Any) -> dict:
        """A params / batch_stats / gradient tree as a pure dict of numpy arrays."""
        return jax.device_get(nnx.to_pure_dict(tree) if self.api == "nnx" else tree)


def jax_value_and_grads(
    layer: JaxLayer, params: Any, stats: Any, x: np.ndarray, cotangent: np.ndarray
) -> tuple[np.ndarray, Any, dict, np.ndarray]:
    """(y, new batch_stats (the API's form), d<y, ct>/dparams (pure dict), d<y, ct>/dx) of the JAX
    half: one jitted program per layer (COMPILER_OPTIONS), reused by later calls (BatchNorm steps)."""
    xj, ctj = jnp.asarray(x), jnp.asarray(cotangent)
    if layer.compiled is None:

        def loss(p: Any, s: Any, xx: jax.Array, ct: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            y, new_stats = layer.apply(p, s, xx)
            return jnp.sum(y * ct), (y, new_stats)

        lowered = jax.jit(jax.grad(loss, argnums=(0, 2), has_aux=True)).lower(params, stats, xj, ctj)
        layer.compiled = lowered.compile(COMPILER_OPTIONS)
    (gp, gx), (y, new_stats) = layer.compiled(params, stats, xj, ctj)
    return np.asarray(y), new_stats, layer.pure(gp), np.asarray(gx)


@functools.cache
def conv_pair(kind: str, case: str, dtype: str, api: str) -> Pairs:
    """'out', 'grad.x', 'grad.kernel', 'grad.bias' as (jax, torch) in NHWC / Flax layouts for one
    conv ('conv') or transposed conv ('conv_transpose') case."""
    linen_cls, nnx_cls, torch_cls = LAYERS[kind]
    kwargs = (CONV_CASES if kind == "conv" else CONV_TRANSPOSE_CASES)[case]
    np_dtype, torch_dtype = DTYPES[dtype]
    image = CONV_IMAGE if kind == "conv" else CONV_TRANSPOSE_IMAGE
    x = _normal(dtype, (BATCH, IN_CHANNELS, *image), seed=1)  # [B, C, H, W]
    # --- torch half
    torch.manual_seed(0)
    layer = torch_cls(IN_CHANNELS, OUT_CHANNELS, **kwargs).to(torch_dtype)
    xt = torch.from_numpy(x).requires_grad_()
    yt = layer(xt)  # [B, O, H', W']
    ct = _normal(dtype, tuple(yt.shape), seed=2)
    (yt * torch.from_numpy(ct)).sum().backward()
    spec = conv_spec(typing.cast(architecture.LayerKind, kind), "layer", layer)
    state = {f"layer.{k}": v for k, v in layer.state_dict().items()}
    params = convert.torch_to_flax_variables(state, [spec], "conv-parity")["params"]["layer"]
    torch_grads = {"layer.weight": _grad(layer.weight), "layer.bias": _grad(layer.bias)}
    torch_gp = convert.layer_to_flax(spec, torch_grads, "conv-parity grads")[0]
    # --- JAX half
    linen = linen_cls(IN_CHANNELS, OUT_CHANNELS, **kwargs)
    nnx_layer = lambda: nnx_cls(IN_CHANNELS, OUT_CHANNELS, **kwargs, rngs=nnx.Rngs(0), param_dtype=np_dtype)
    jl = JaxLayer(api, linen, nnx_layer, {"params": params}, {})
    yj, _, gp, gx = jax_value_and_grads(jl, *jl.initial(), nhwc(x), nhwc(ct))
    return {
        "out": (yj, nhwc(yt.detach().numpy())),
        "grad.x": (gx, nhwc(_grad(xt))),
        "grad.kernel": (gp["kernel"], torch_gp["kernel"]),
        "grad.bias": (gp["bias"], torch_gp["bias"]),
    }


def _randomize_batchnorm(layer: tc.BatchNorm2d, seed: int) -> None:
    """Non-trivial affine parameters and running statistics (eval mode then tests them)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        tensors = (layer.weight, layer.bias, layer.running_mean, layer.running_var)
        for t, (lo, hi) in zip(
            typing.cast(tuple[torch.Tensor, ...], tensors),
            ((0.5, 2.0), (-1.0, 1.0), (-1.0, 1.0), (0.5, 2.0)),
            strict=True,
        ):
            t.copy_(torch.from_numpy(rng.uniform(lo, hi, t.shape)))


def batchnorm_inputs(dtype: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(x, cotangent) [B, C, H, W] per step: BN_STEPS training batches (mean 0.5, std 2), then eval."""
    shape = (BATCH, IN_CHANNELS, *CONV_IMAGE)
    xs = [2.0 * _normal(dtype, shape, seed=10 + i) + 0.5 for i in range(BN_STEPS + 1)]
    return xs, [_normal(dtype, shape, seed=20 + i) for i in range(BN_STEPS + 1)]


def batchnorm_layer(dtype: str) -> tuple[tc.BatchNorm2d, dict]:
    """A torch BatchNorm2d with random affine parameters and running statistics, and the same as Flax
    variables {'params': {'bn': ...}, 'batch_stats': {'bn': ...}}."""
    layer = tc.BatchNorm2d(IN_CHANNELS).to(DTYPES[dtype][1])
    _randomize_batchnorm(layer, seed=3)
    state = {f"bn.{k}": v for k, v in layer.state_dict().items()}
    return layer, convert.torch_to_flax_variables(state, [BN_SPEC], "bn")


BN_SPEC = architecture.LayerSpec("bn", "batchnorm", IN_CHANNELS, IN_CHANNELS)


@functools.cache
def batchnorm_pair(dtype: str, api: str) -> Pairs:
    """BatchNorm2d in train mode for BN_STEPS steps (each step's output and gradients, then the
    running mean and var), and in eval mode on torch's final statistics (output and gradients)."""
    np_dtype = DTYPES[dtype][0]
    xs, cts = batchnorm_inputs(dtype)
    # --- torch half
    layer, initial = batchnorm_layer(dtype)
    torch_steps = []
    for i, (x, ct) in enumerate(zip(xs, cts, strict=True)):
        if i == BN_STEPS:
            layer.eval()
        xt = torch.from_numpy(x).requires_grad_()
        yt = layer(xt)
        (yt * torch.from_numpy(ct)).sum().backward()
        grads = (_grad(layer.weight), _grad(layer.bias))
        torch_steps.append((nhwc(yt.detach().numpy()), nhwc(_grad(xt)), *grads))
        layer.zero_grad()
        if i == BN_STEPS - 1:
            final = {f"bn.{k}": v for k, v in layer.state_dict().items()}
    assert int(final["bn.num_batches_tracked"]) == BN_STEPS
    trained = convert.torch_to_flax_variables(final, [BN_SPEC], "bn")
    # --- JAX half: the train chain from the initial weights, eval from torch's final statistics
    jax_steps, stats = [], None
    for i, (x, ct) in enumerate(zip(xs, cts, strict=True)):
        if i in (0, BN_STEPS):
            variables = {col: tree["bn"] for col, tree in (initial if i == 0 else trained).items()}
            nnx_layer = lambda: nc.BatchNorm2d(IN_CHANNELS, param_dtype=np_dtype)
            jl = JaxLayer(
                api, jc.BatchNorm2d(IN_CHANNELS), nnx_layer, variables, {"use_running_average": i > 0}
            )
            params, stats = jl.initial()
        y, new_stats, gp, gx = jax_value_and_grads(jl, params, stats, nhwc(x), nhwc(ct))
        jax_steps.append((y, gx, gp["scale"], gp["bias"]))
        if i < BN_STEPS:
            stats = new_stats
        if i == BN_STEPS - 1:
            jax_final = jl.pure(stats)
    pairs: Pairs = {}
    for i, (j, t) in enumerate(zip(jax_steps, torch_steps, strict=True)):
        where = "eval" if i == BN_STEPS else f"train.step{i + 1}"
        for what, a, b in zip(("out", "grad.x", "grad.scale", "grad.bias"), j, t, strict=True):
            pairs[f"{where}.{what}"] = (np.asarray(a), b)
    for leaf in ("mean", "var"):
        pairs[f"train.running_{leaf}"] = (jax_final[leaf], trained["batch_stats"]["bn"][leaf])
    return pairs
