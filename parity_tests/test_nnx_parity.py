"""NNX against Linen (same device, dtype, weights and eps), per preset and dtype: the forward, every
loss term and every gradient bit for bit (the loss-and-gradient program is the same StableHLO), the
functional step's 100-step trajectory bit for bit (the same program as step.update), and the
idiomatic nnx.Optimizer step's trajectory within the trajectory tolerance (another program).
Tolerances and reasons: tolerances.NNX_VS_LINEN, NNX_IDIOMATIC_TRAJECTORY. The NNX-vs-torch checks
are the api=nnx cases of the other test files."""

from __future__ import annotations

import functools
import re
import typing
from typing import Any

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jax_vae import optim as jo
from jax_vae import step as js
from jax_vae.linen.models import split_weights
from jax_vae.losses import loss_fn
from jax_vae.nnx import models as nnx_models
from jax_vae.nnx import step as nnx_step
from parity_tests.harness import (
    STEPS_PER_EPOCH,
    _flat,
    forward_pair,
    jax_trajectory,
    make_inputs,
    setup_pair,
    trajectory_batches,
    trajectory_pair,
)
from parity_tests.sizes import parity_preset
from parity_tests.tolerances import NNX_IDIOMATIC_TRAJECTORY, NNX_VS_LINEN, assert_close

STEPS = 100
FORWARD = ("encoder.mean", "encoder.scale", "decoder.outputs")


def _program(jitted: Any, *args) -> str:
    """The StableHLO text of jitted(*args) without its names: the module's (the jitted function's)
    and the outputs' pytree paths (an nnx.State path ends in .value)."""
    text = re.sub(r"^module @\S+", "module", jitted.lower(*args).as_text())
    return re.sub(r' \{jax\.result_info = "[^"]*"\}', "", text)


def test_forward_loss_and_grads_are_linens(preset, dtype):
    cfg = parity_preset(preset)
    _, weights = setup_pair(cfg, dtype)
    params, stats = split_weights(weights, cfg)
    x, eps = (jnp.asarray(a) for a in make_inputs(cfg, dtype))
    graphdef, state, stat_state = typing.cast(
        tuple, nnx.split(nnx_models.from_linen_params(cfg, params, stats), nnx.Param, nnx.BatchStat)
    )
    loss = functools.partial(nnx_models.params_loss(graphdef), batch_stats=stat_state if stats else None)
    linen_loss = functools.partial(loss_fn, batch_stats=stats)
    linen = jax.jit(lambda p, x, e, b: js.value_and_grad(p, x, e, cfg, b, apply_loss=linen_loss))
    nnx_vg = jax.jit(lambda s, x, e, b: js.value_and_grad(s, x, e, cfg, b, apply_loss=loss))
    if stats is None:  # with BatchNorm the statistics are closed over as constants: numbers below
        assert _program(nnx_vg, state, x, eps, cfg.beta) == _program(linen, params, x, eps, cfg.beta), (
            f"{preset}/{dtype}: the NNX loss and gradient program is not Linen's"
        )
    a, b = forward_pair(cfg, dtype, "linen"), forward_pair(cfg, dtype, "nnx")
    assert a.keys() == b.keys()
    for name in a:
        t = NNX_VS_LINEN["forward" if name in FORWARD else "loss_and_grad"]
        assert_close(f"{preset}/{dtype}/nnx vs linen/{name}", b[name][0], a[name][0], t)


def _jax_half(out: dict) -> dict:
    return {k: v[0] for k, v in out.items()}


# The functional NNX step lowers to Linen's StableHLO (asserted for every preset and dtype below), so
# its 100 steps equal Linen's by construction; they are run in full, in float64, for one MLP and the
# BatchNorm preset to show it end to end (CI time: ~10-25 s per preset and dtype).
FUNCTIONAL_RUNS = {("stutz-rectangles", "float64"), ("antixk-vanilla", "float64")}


@pytest.mark.parametrize("style", ["functional", "idiomatic"])
def test_trajectories_are_linens(preset, dtype, style):
    cfg = parity_preset(preset)
    where = f"{preset}/{dtype}/nnx {style} vs linen"
    if style == "idiomatic":
        nnx_half = _jax_half(trajectory_pair(cfg, dtype, steps=STEPS, api="nnx"))
        t = NNX_IDIOMATIC_TRAJECTORY[dtype]
    else:
        _, params = setup_pair(cfg, dtype)
        tx = jo.make_optimizer(cfg, steps_per_epoch=STEPS_PER_EPOCH)
        given, stats = split_weights(params, cfg)
        graphdef, state = nnx_step.split(nnx_models.from_linen_params(cfg, given, stats), tx)
        x, eps = (jnp.asarray(a) for a in trajectory_batches(cfg, dtype)[0])
        linen_update = jax.jit(lambda s, x, e: js.update(s, x, e, cfg, tx))
        nnx_update = jax.jit(lambda s, x, e: nnx_step.functional_update(graphdef, s, x, e, cfg, tx))
        assert _program(nnx_update, state, x, eps) == _program(
            linen_update, js.create_state(given, tx, stats), x, eps
        )
        if (preset, dtype) not in FUNCTIONAL_RUNS:  # the same program on the same inputs: the same steps
            return
        losses, final = jax_trajectory(cfg, params, trajectory_batches(cfg, dtype), STEPS, "nnx-functional")
        nnx_half = {"losses": losses} | {f"param.{k}": v for k, v in _flat(final).items()}
        t = NNX_VS_LINEN["functional_trajectory"]
    linen = _jax_half(trajectory_pair(cfg, dtype, steps=STEPS))  # cached, shared with other files
    names = [k for k in linen if style == "functional" or dtype == "float64" or k == "losses"]
    assert nnx_half.keys() == linen.keys()
    for name in names:
        assert_close(f"{where}/{name}", nnx_half[name], linen[name], t)
