"""Convolution layers alone, JAX (Linen and NNX, NHWC) against torch (NCHW) on weights copied through
common.convert: Conv2d with each padding form, ConvTranspose2d with and without output_padding and
Keras' 'same' / 'valid', BatchNorm2d in train mode (outputs, gradients and the running statistics
over 3 steps) and eval mode, a Linear after a flatten and before a reshape; forward outputs and the
gradients w.r.t. the input and every parameter. The halves live in conv_harness.py. Then the
converter's round trips and errors, and JAX-only checks of the padding arithmetic against XLA's own.
"""

from __future__ import annotations

import typing
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax import lax

from jax_vae import conv_ops
from jax_vae.common.config import architecture
from jax_vae.common.config.conv_geometry import (
    conv_padding,
    conv_transpose_output_size,
    conv_transpose_padding,
    pair,
)
from jax_vae.common.errors import ConversionError
from jax_vae.common.weights import convert
from jax_vae.linen import conv_layers as jc
from jax_vae.nnx import conv_layers as nc
from parity_tests import conv_flatten_harness as cf
from parity_tests import conv_harness as ch
from parity_tests.tolerances import assert_close, tol
from torch_reference.nn import conv_layers as tc


def _check(where: str, pairs: ch.Pairs, dtype: str) -> None:
    """Outputs and running statistics at the forward tolerance, gradients at the gradient one."""
    assert pairs, where
    for name, (a, b) in pairs.items():
        assert_close(f"{where}/{name}", a, b, tol(dtype, ch.tol_kind(name)))


@pytest.mark.parametrize("case", list(ch.CONV_CASES))
def test_conv2d(case, dtype, api):
    _check(f"conv[{case}]/{dtype}/{api}", ch.conv_pair("conv", case, dtype, api), dtype)


@pytest.mark.parametrize("case", list(ch.CONV_TRANSPOSE_CASES))
def test_conv_transpose2d(case, dtype, api):
    _check(f"conv_transpose[{case}]/{dtype}/{api}", ch.conv_pair("conv_transpose", case, dtype, api), dtype)


def test_batchnorm2d_train_and_eval(dtype, api):
    pairs = ch.batchnorm_pair(dtype, api)
    assert {f"train.step{ch.BN_STEPS}.out", "eval.grad.x", "train.running_var"} <= pairs.keys()
    _check(f"batchnorm/{dtype}/{api}", pairs, dtype)


def test_flatten_and_reshape_linears(dtype, api):
    """conv -> flatten -> Linear and Linear -> reshape -> transposed conv agree with the (C, H, W)
    permutation of the Linears (linear_from_chw / linear_to_chw)."""
    _check(f"flatten/{dtype}/{api}", cf.flatten_pair(dtype, api), dtype)


def test_flatten_order_matters():
    """Mapping those Linears as plain ones (no permutation) breaks parity: the check can fail."""
    jax_out, torch_out = cf.flatten_pair("float64", "linen", permute=False)["out"]
    assert np.abs(jax_out - torch_out).max() > 1e-2


def test_flax_batchnorm_stores_the_biased_variance():
    """Why BatchNorm2d is not nn.BatchNorm(momentum=0.9): after 3 steps Flax's running mean is
    torch's, its running var is not (biased batch variance, off by the factor n / (n - 1))."""
    pairs = ch.batchnorm_pair("float64", "linen")
    torch_mean, torch_var = pairs["train.running_mean"][1], pairs["train.running_var"][1]
    bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    xs = [jnp.asarray(ch.nhwc(x)) for x in ch.batchnorm_inputs("float64")[0][: ch.BN_STEPS]]
    initial = ch.batchnorm_layer("float64")[1]

    def train(variables: dict, xs: list[jax.Array]) -> dict:
        for x in xs:
            _, updated = bn.apply(variables, x, mutable=["batch_stats"])
            variables = {"params": variables["params"], "batch_stats": updated["batch_stats"]}
        return variables["batch_stats"]

    stats = _compiled(train, {col: tree["bn"] for col, tree in initial.items()}, xs)
    assert_close("flax mean", stats["mean"], torch_mean, tol("float64", "forward"))
    assert np.abs(np.asarray(stats["var"]) - torch_var).max() > 1e-4


def _compiled(fn: Any, *args: Any) -> Any:
    """fn(*args), jitted with the harness' compiler options (one small program, compiled fast)."""
    return jax.jit(fn).lower(*args).compile(ch.COMPILER_OPTIONS)(*args)


# --- the transposed conv is the gradient of a conv: jax.vjp of lax's forward conv (XLA's own
# 'SAME' / 'VALID' or torch's (p, p)) against the layer minus its bias, in float64


@pytest.mark.parametrize("case", list(ch.CONV_TRANSPOSE_CASES))
def test_conv_transpose_is_the_gradient_of_a_conv(case):
    kw = dict(ch.CONV_TRANSPOSE_CASES[case])
    layer = jc.ConvTranspose2d(ch.IN_CHANNELS, ch.OUT_CHANNELS, **kw)
    k, s = (pair(kw[name], name) for name in ("kernel_size", "stride"))
    padding, extra = kw["padding"], pair(kw.get("output_padding", 0), "output_padding")
    y = ch._normal("float64", (ch.BATCH, *ch.CONV_TRANSPOSE_IMAGE, ch.IN_CHANNELS), seed=6)
    params = {
        "kernel": ch._normal("float64", (*k, ch.OUT_CHANNELS, ch.IN_CHANNELS), seed=7),  # [kh, kw, O, I]
        "bias": ch._normal("float64", (ch.OUT_CHANNELS,), seed=8),
    }
    size = [
        conv_transpose_output_size(n, *a, padding, op) for n, a, op in zip(y.shape[1:3], zip(k, s), extra)
    ]
    fwd_pad = padding.upper() if isinstance(padding, str) else [(padding, padding)] * 2
    x0 = jnp.zeros((ch.BATCH, *size, ch.OUT_CHANNELS), jnp.float64)

    def got_and_want(params: dict, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        def forward(x: jax.Array) -> jax.Array:  # [B, N, M, O] -> [B, n, m, I], the same kernel
            return lax.conv_general_dilated(x, params["kernel"], s, fwd_pad, dimension_numbers=ch.DIMS)

        out, vjp = jax.vjp(forward, x0)
        assert out.shape == y.shape, (out.shape, y.shape)
        return layer.apply({"params": params}, y) - params["bias"], vjp(y)[0]

    got, want = _compiled(got_and_want, params, jnp.asarray(y))
    assert_close(f"conv_transpose[{case}] vs vjp", got, want, tol("float64", "forward"))


_GRAD_CASES = [("conv", c) for c in ch.CONV_CASES] + [("conv_transpose", c) for c in ch.CONV_TRANSPOSE_CASES]


@pytest.mark.parametrize(("kind", "case"), _GRAD_CASES)
def test_kernel_gradient_by_taps_is_xlas(kind, case):
    """The layers' kernel and input gradients (conv_ops._conv_bwd: per-tap matmuls on CPU) against
    XLA's own derivative of lax's conv / conv_transpose, plain and inside a lax.scan, in float64."""
    kw = dict((ch.CONV_CASES if kind == "conv" else ch.CONV_TRANSPOSE_CASES)[case])
    transposed = kind == "conv_transpose"
    layer = (jc.ConvTranspose2d if transposed else jc.Conv2d)(ch.IN_CHANNELS, ch.OUT_CHANNELS, **kw)
    image = ch.CONV_TRANSPOSE_IMAGE if transposed else ch.CONV_IMAGE
    x = jnp.asarray(ch._normal("float64", (ch.BATCH, *image, ch.IN_CHANNELS), seed=6))
    params = jax.tree.map(lambda p: p.astype(jnp.float64), layer.init(jax.random.key(0), x)["params"])
    apply = typing.cast(typing.Callable[..., jax.Array], layer.apply)
    g = jnp.asarray(ch._normal("float64", apply({"params": params}, x).shape, seed=9))
    k, stride = pair(kw["kernel_size"], "kernel_size"), pair(kw["stride"], "stride")
    extra = pair(kw.get("output_padding", 0), "output_padding")
    if transposed:
        pads = [
            conv_transpose_padding(*a, kw["padding"], op)
            for a, op in zip(zip(x.shape[1:3], k, stride), extra)
        ]
    else:
        pads = [conv_padding(*a, kw["padding"]) for a in zip(x.shape[1:3], k, stride)]
    xla_op = conv_ops.xla_transposed_conv if transposed else conv_ops.xla_conv

    def ours(kernel: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.vdot(apply({"params": {"kernel": kernel, "bias": params["bias"]}}, x), g)

    def xlas(kernel: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.vdot(xla_op(x, kernel, stride, pads), g)

    def in_scan(kernel: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        (kernel, x), _ = lax.scan(
            lambda c, _: (jax.grad(ours, argnums=(0, 1))(*c), None), (kernel, x), length=1
        )
        return kernel, x

    want = _compiled(jax.grad(xlas, argnums=(0, 1)), params["kernel"], x)
    for how, fn in (("plain", jax.grad(ours, argnums=(0, 1))), ("in scan", in_scan)):
        got = _compiled(fn, params["kernel"], x)
        for name, a, b in zip(("kernel", "x"), got, want):
            assert_close(f"{kind}[{case}] d{name} {how} vs XLA", a, b, tol("float64", "grad"))


def test_tf_same_padding_is_xlas():
    """common.conv's TF 'same' / 'valid' pairs are lax.padtype_to_pads' for every small (n, k, s), and
    stride 2 on an even size puts the odd row at the bottom: n = 8, k = 3 -> (0, 1)."""
    assert conv_padding(8, 3, 2, "same") == (0, 1) and conv_padding(9, 3, 2, "same") == (1, 1)
    for n in range(1, 13):
        for k in range(1, 6):
            for s in range(1, 4):
                for mode in ("same", "valid"):
                    want = tuple(lax.padtype_to_pads((n,), (k,), (s,), mode.upper())[0])
                    assert conv_padding(n, k, s, mode) == want, (n, k, s, mode)


def test_nnx_batchnorm_follows_train_and_eval():
    """model.eval() / model.train() set use_running_average, as for nnx.BatchNorm; Linen's init
    leaves the statistics at mean 0, var 1 (torch's reset) and NNX starts there too."""
    x = jnp.asarray(ch._normal("float64", (ch.BATCH, *ch.CONV_IMAGE, ch.IN_CHANNELS), seed=7))
    linen = jc.BatchNorm2d(ch.IN_CHANNELS).init(jax.random.key(0), x, use_running_average=False)
    assert np.array_equal(linen["batch_stats"]["mean"], np.zeros(3))
    assert np.array_equal(linen["batch_stats"]["var"], np.ones(3))
    layer = nc.BatchNorm2d(ch.IN_CHANNELS, param_dtype=jnp.float64)
    assert nnx.to_pure_dict(nnx.state(layer, nnx.BatchStat)).keys() == linen["batch_stats"].keys()
    layer.eval()
    assert np.array_equal(layer(x), layer(x, use_running_average=True))
    assert np.array_equal(layer.var[...], np.ones(3)), "eval mode updated the statistics"
    layer.train()
    y = layer(x)
    assert np.abs(np.asarray(y).mean(axis=(0, 1, 2))).max() < 1e-12  # normalized with batch stats
    assert not np.array_equal(layer.var[...], np.ones(3))


# --- the converter


def _torch_layers() -> torch.nn.ModuleDict:
    """One torch layer of every LayerSpec kind (cf.flatten_specs' model plus a BatchNorm and a Linear)."""
    torch.manual_seed(0)
    model = cf.torch_flatten_model()
    bn = tc.BatchNorm2d(4)
    ch._randomize_batchnorm(bn, seed=8)
    typing.cast(torch.Tensor, bn.num_batches_tracked).fill_(7)
    typing.cast(Any, model)["enc"]["bn"] = bn
    typing.cast(Any, model)["dec"]["out"] = torch.nn.Linear(7, 2)
    return model


_FLAT = cf.flatten_specs()
SPECS = [*_FLAT[:2], architecture.LayerSpec("enc.bn", "batchnorm", 4, 4), *_FLAT[2:]]
SPECS.append(architecture.LayerSpec("dec.out", "linear", 7, 2))  # in the modules' order, as state_dict


def test_conv_converter_round_trips_are_exact(dtype):
    model = _torch_layers().to(ch.DTYPES[dtype][1])
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    variables = convert.torch_to_flax_variables(state, SPECS, "conv-layers")
    assert variables["batch_stats"]["enc"]["bn"].keys() == {"mean", "var"}  # num_batches_tracked: dropped
    back = convert.flax_to_torch_variables(variables, SPECS, "conv-layers", num_batches_tracked=7)
    assert list(back) == list(state)
    for k in state:
        assert back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k]), k
    # Flax -> torch -> Flax: torch accepts every key and shape (strict), and the trip is exact
    torch_again = _torch_layers().to(ch.DTYPES[dtype][1])
    torch_again.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})
    again = convert.torch_to_flax_variables(torch_again.state_dict(), SPECS, "conv-layers")
    flat_a, flat_b = (jax.tree_util.tree_leaves_with_path(t) for t in (variables, again))
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, a), (_, b) in zip(flat_a, flat_b, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)


def test_conv_converter_errors_name_the_key():
    state = {k: v.numpy() for k, v in _torch_layers().state_dict().items()}
    flax_layout = dict(state, **{"enc.conv.weight": state["enc.conv.weight"].transpose(2, 3, 1, 0)})
    with pytest.raises(
        ConversionError, match=r"'enc\.conv\.weight' has shape \(3, 3, 3, 4\).*\(4, 3, 3, 3\)"
    ):
        convert.torch_to_flax_variables(flax_layout, SPECS, "conv-layers")
    missing = {k: v for k, v in state.items() if k != "enc.bn.running_var"}
    with pytest.raises(ConversionError, match=r"missing key 'enc\.bn\.running_var'"):
        convert.torch_to_flax_variables(missing, SPECS, "conv-layers")
    extra = dict(state, **{"enc.bn2.weight": np.zeros(4)})
    with pytest.raises(ConversionError, match=r"unexpected key 'enc\.bn2\.weight'"):
        convert.torch_to_flax_variables(extra, SPECS, "conv-layers")
    variables = convert.torch_to_flax_variables(state, SPECS, "conv-layers")
    convt = variables["params"]["dec"]["convt"]
    convt["kernel"] = convt["kernel"].transpose(0, 1, 3, 2)  # [kh, kw, I, O]: Flax ConvTranspose's default
    with pytest.raises(ConversionError, match=r"'params:dec\.convt\.kernel' has shape \(3, 3, 4, 3\)"):
        convert.flax_to_torch_variables(variables, SPECS, "conv-layers")
    del variables["batch_stats"]["enc"]["bn"]["var"]
    with pytest.raises(ConversionError, match=r"missing key 'batch_stats:enc\.bn\.var'"):
        convert.flax_to_torch_variables(variables, SPECS, "conv-layers")
    wrong_chw = [architecture.LayerSpec("enc.fc", "linear_from_chw", 80, 6, chw=(4, 5, 5))]
    with pytest.raises(ConversionError, match=r"'enc\.fc'.*\(4, 5, 5\) has 100 elements, not 80"):
        convert.layer_to_flax(wrong_chw[0], state, "conv-layers")


def test_chw_permutation_is_the_layout_change():
    """Column j of a Linear after torch's flatten meets NCHW element j; after the permutation, row i of
    the Flax kernel meets NHWC-flatten element i: the same products, so the same output."""
    c, h, w = 2, 3, 4
    x = np.random.default_rng(9).standard_normal((1, c, h, w))
    perm = convert.chw_permutation((c, h, w))
    assert np.array_equal(x.reshape(-1)[perm], x.transpose(0, 2, 3, 1).reshape(-1))


def test_nnx_batchnorm_in_place_steps(dtype):
    """The idiomatic NNX form (nnx.jit of nnx.grad on the module, statistics updated in place) takes
    torch's 3 training steps: outputs, the gradients w.r.t. the input and parameters, and the running
    statistics. (A module closed over inside nnx.grad instead raises TraceContextError on the update.)"""
    pairs = ch.batchnorm_pair(dtype, "nnx")
    xs, cts = ch.batchnorm_inputs(dtype)
    variables = ch.batchnorm_layer(dtype)[1]
    layer = nnx.eval_shape(lambda: nc.BatchNorm2d(ch.IN_CHANNELS, param_dtype=ch.DTYPES[dtype][0]))
    nnx.update(layer, *({k: jnp.asarray(v) for k, v in tree["bn"].items()} for tree in variables.values()))

    @nnx.jit
    def step(layer: nc.BatchNorm2d, x: jax.Array, ct: jax.Array) -> tuple[jax.Array, Any, jax.Array]:
        def loss(layer: nc.BatchNorm2d, x: jax.Array) -> tuple[jax.Array, jax.Array]:
            y = layer(x)
            return jnp.sum(y * ct), y

        (grads, gx), y = nnx.grad(loss, argnums=(0, 1), has_aux=True)(layer, x)
        return y, grads, gx

    for i in range(ch.BN_STEPS):
        y, grads, gx = step(layer, jnp.asarray(ch.nhwc(xs[i])), jnp.asarray(ch.nhwc(cts[i])))
        got = {"out": y, "grad.x": gx} | {f"grad.{k}": v for k, v in nnx.to_pure_dict(grads).items()}
        for name, value in got.items():
            where = f"train.step{i + 1}.{name}"
            assert_close(f"{dtype}/{where}", value, pairs[where][1], tol(dtype, ch.tol_kind(name)))
    for leaf in ("mean", "var"):
        got = getattr(layer, leaf)[...]
        assert_close(f"{dtype}/running_{leaf}", got, pairs[f"train.running_{leaf}"][1], tol(dtype, "forward"))


@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_torch_default_init_uses_torchs_fan_in(kind):
    """init_scheme 'torch' draws W, b ~ U(+-1/sqrt(fan_in)) on both sides with torch's fan_in, which
    for ConvTranspose2d is out * kh * kw (torch reads weight dim 1): every draw inside the bound and
    the largest near it, for the kernel and the bias."""
    c_in, c_out, k = 16, 40, (3, 2)  # fan_in 96 (conv) vs 240 (transposed): distinguishable bounds
    bound = 1.0 / np.sqrt((c_in if kind == "conv" else c_out) * k[0] * k[1])
    linen_cls, _, torch_cls = ch.LAYERS[kind]
    torch.manual_seed(0)
    layer = torch_cls(c_in, c_out, k)
    x = jnp.zeros((1, 5, 5, c_in))
    params = jax.jit(linen_cls(c_in, c_out, k).init)(jax.random.key(0), x)["params"]
    for side, weights in (("torch", (layer.weight.detach(), layer.bias.detach())), ("jax", params.values())):
        for w in weights:
            w = np.abs(np.asarray(w))
            assert w.max() <= bound and w.max() > (0.75 if w.size < 10 else 0.9) * bound, (
                side,
                w.max(),
                bound,
            )
