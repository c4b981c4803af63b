"""The Flax NNX API (jax_vae/nnx/models.py, nnx_step.py): its state is the Linen params tree and,
through the converter, the torch state_dict; its forward, loss and gradients are Linen's bit for bit;
both step styles train exactly as step.train_step; the functional chunk is chunk.make_chunk_fn's
XLA program and equals its single steps."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_vae import chunk, functional, optim
from jax_vae import step as js
from jax_vae.common.config.presets import PRESETS
from jax_vae.common.config.vae_config import layer_specs
from jax_vae.common.weights import convert
from jax_vae.linen import models
from jax_vae.losses import loss_fn as linen_loss_fn
from jax_vae.nnx import models as nnx_models
from jax_vae.nnx import step as nnx_step

PRESET_NAMES = list(PRESETS)
BATCH, STEPS = 8, 3


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
    return [(jax.tree_util.keystr(p), np.asarray(v)) for p, v in jax.tree_util.tree_leaves_with_path(tree)]


def _assert_identical(name: str, a, b) -> None:
    """Same tree, shapes, dtypes and every bit."""
    la, lb = _leaves(a), _leaves(b)
    assert [k for k, _ in la] == [k for k, _ in lb], f"{name}: trees differ"
    for (key, x), (_, y) in zip(la, lb, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype, (
            f"{name}{key}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}"
        )
        assert np.array_equal(x, y), f"{name}{key}: max abs diff {np.abs(x - y).max():.3g}"


def _inputs(cfg, seed: int = 1) -> tuple[jax.Array, jax.Array]:
    x = jax.random.uniform(jax.random.key(seed), (BATCH, cfg.input_dim))  # [B, D]
    return x, functional.sample_eps(jax.random.key(seed + 1), cfg, BATCH)  # [L, B, Z]


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_state_is_the_linen_params_tree_and_the_torch_state_dict(preset):
    cfg = PRESETS[preset]
    linen = models.init_params(jax.random.key(0), cfg)
    model = nnx_models.init_model(jax.random.key(0), cfg)
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    _assert_identical(f"{preset}/init_model", state, linen)  # init through Linen: bit for bit
    # NNX's own construction (traced, nothing drawn): the same tree, shapes and dtypes
    native = nnx_models.to_linen_params(nnx.eval_shape(lambda: nnx_models.VAE(cfg, rngs=nnx.Rngs(0))))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), native) == jax.tree.map(
        lambda a: (a.shape, a.dtype), linen
    )
    layers = len(convert.conv_specs(cfg)) if cfg.arch == "conv" else len(layer_specs(cfg))
    assert len(jax.tree.leaves(native)) == 2 * layers  # weight and bias (BatchNorm: scale and bias)
    # torch layout through the one converter, exact both ways (BatchNorm: with the running statistics)
    stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    state_dict = convert.flax_to_torch(models.weights(state, stats, cfg), cfg)
    assert {k: v.shape for k, v in state_dict.items()} == convert.expected_torch_shapes(cfg)
    given, back_stats = models.split_weights(convert.torch_to_flax(state_dict, cfg), cfg)
    back = nnx_models.from_linen_params(cfg, given, back_stats)
    _assert_identical(f"{preset}/torch round trip", nnx_models.to_linen_params(back), linen)


def test_from_linen_params_rejects_another_preset_and_wrong_shapes():
    cfg = PRESETS["pytorch-examples"]
    with pytest.raises(ValueError, match="params keys"):
        nnx_models.from_linen_params(cfg, models.init_params(jax.random.key(0), PRESETS["stutz-rectangles"]))
    params = models.init_params(jax.random.key(0), cfg)
    params["decoder"]["out"]["bias"] = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"\['decoder'\]\['out'\]\['bias'\] has shape \(3,\)"):
        nnx_models.from_linen_params(cfg, params)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_forward_loss_and_gradients_are_linen_bit_for_bit(preset):
    cfg = PRESETS[preset]
    variables = models.init_variables(jax.random.key(0), cfg)
    params, stats = variables["params"], variables.get("batch_stats")  # stats: BatchNorm only
    model = nnx_models.from_linen_params(cfg, params, stats)
    x, eps = _inputs(cfg)
    _assert_identical(f"{preset}/forward", model(x, eps), models.VAE(cfg).apply(variables, x, eps))
    _assert_identical(
        f"{preset}/encode", model.encode(x), models.VAE(cfg).apply(variables, x, method="encode")
    )
    graphdef = nnx.graphdef(model)
    vg = lambda loss: jax.jit(
        lambda p: jax.value_and_grad(loss, has_aux=True)(p, x, eps, cfg, 0.5, batch_stats=stats)
    )(params)
    _assert_identical(f"{preset}/loss and grads", vg(nnx_models.params_loss(graphdef)), vg(linen_loss_fn))
    # the model-level loss, and a key instead of eps (drawn by losses._as_eps)
    key = jax.random.key(5)
    loss, aux = linen_loss_fn(params, x, key, cfg, batch_stats=stats)
    aux.pop("batch_stats", None)  # BatchNorm: the NNX model updated its own in place
    _assert_identical(f"{preset}/loss_fn", nnx_models.loss_fn(model, x, key, cfg), (loss, aux))


def _three_ways(cfg, steps: int = STEPS):
    """Params and metrics after `steps` steps from one init and key: Linen, NNX idiomatic, NNX functional."""
    tx = optim.make_optimizer(cfg, steps_per_epoch=10)
    key, x = jax.random.key(3), _inputs(cfg)[0]
    state = js.create_state(models.init_params(jax.random.key(0), cfg), tx)
    linen_step = js.make_train_step(cfg, tx)
    model = nnx_models.init_model(jax.random.key(0), cfg)
    optimizer = nnx_step.create_optimizer(model, tx)
    graphdef, fstate = nnx_step.split(nnx_models.init_model(jax.random.key(0), cfg), tx)
    functional = nnx_step.make_functional_step(graphdef, cfg, tx)
    out: dict[str, list] = {"linen": [], "idiomatic": [], "functional": []}
    for _ in range(steps):
        state, m = linen_step(state, x, key)
        out["linen"].append(m)
        out["idiomatic"].append(nnx_step.train_step(model, optimizer, x, key, cfg))
        fstate, m = functional(fstate, x, key)
        out["functional"].append(m)
    assert int(nnx_step.optimizer_step(optimizer)) == int(fstate.step) == int(state.step) == steps
    params = {
        "linen": state.params,
        "idiomatic": nnx_models.to_linen_params(model),
        "functional": nnx_models.to_linen_params(nnx_step.merge(graphdef, fstate)),
    }
    return params, out


# one preset per optimizer path: coupled weight decay, the split sigma head with a mean reduction,
# Lua Adam (the parity suite runs NNX against Linen for every preset)
@pytest.mark.parametrize("preset", ["minimalist", "day37", "stutz-rectangles"])
def test_both_step_styles_train_as_linen_bit_for_bit(preset):
    params, metrics = _three_ways(PRESETS[preset])
    for style in ("idiomatic", "functional"):
        _assert_identical(f"{preset}/{style}/params", params[style], params["linen"])
        _assert_identical(f"{preset}/{style}/metrics", metrics[style], metrics["linen"])


@pytest.mark.parametrize("preset", ["flax-examples", "iwae-paper"])
def test_micro_batched_and_warm_up_steps_train_as_linen(preset):
    """micro_batch (5 of 8: one full chunk + a remainder; mean and sum reductions; IWAE with the lr
    schedule) and KL warm-up (beta from the optimizer's step count)."""
    cfg = dataclasses.replace(PRESETS[preset], micro_batch=5, kl_warmup_steps=4, beta=0.5)
    params, metrics = _three_ways(cfg)
    for style in ("idiomatic", "functional"):
        _assert_identical(f"{preset}/{style}/params", params[style], params["linen"])
        _assert_identical(f"{preset}/{style}/metrics", metrics[style], metrics["linen"])


def _program(jitted: Any, *args) -> str:
    """The StableHLO text of jitted(*args), without the module name (the jitted function's name)."""
    return re.sub(r"^module @\S+", "module", jitted.lower(*args).as_text())


@pytest.mark.parametrize("preset", ["pytorch-examples", "stutz-rectangles", "iwae-paper"])
def test_functional_programs_are_linens(preset):
    """The functional step and chunk lower to the same XLA programs as step.make_train_step and
    chunk.make_chunk_fn: nnx.merge is gone after tracing."""
    cfg = PRESETS[preset]
    tx = optim.make_optimizer(cfg, steps_per_epoch=10)
    state = js.create_state(models.init_params(jax.random.key(0), cfg), tx)
    graphdef, fstate = nnx_step.split(nnx_models.init_model(jax.random.key(0), cfg), tx)
    data, key = jnp.zeros((50, cfg.input_dim)), jax.random.key(1)
    idx = jnp.zeros((4, cfg.batch_size), jnp.int32)
    batch = data[: cfg.batch_size]
    linen_step = _program(js.make_train_step(cfg, tx), state, batch, key)
    assert _program(nnx_step.make_functional_step(graphdef, cfg, tx), fstate, batch, key) == linen_step
    linen_chunk = _program(chunk.make_chunk_fn(cfg, tx), state, data, idx, key)
    assert _program(nnx_step.make_functional_chunk(graphdef, cfg, tx), fstate, data, idx, key) == linen_chunk


@pytest.mark.parametrize("preset", ["pytorch-examples", "day37"])
def test_functional_chunk_equals_its_single_steps(preset):
    """One lax.scan over S = 5 batches gives the states and metrics of 5 single functional steps on
    data[idx[s]] (the same math and keys; XLA may fuse the scan body and the step differently)."""
    cfg = dataclasses.replace(PRESETS[preset], batch_size=BATCH)
    tx = optim.make_optimizer(cfg)
    data = jax.random.uniform(jax.random.key(7), (40, cfg.input_dim))  # [N, D]
    idx = jax.random.permutation(jax.random.key(8), 40)[:40].reshape(5, BATCH)  # [S, B]
    key = jax.random.key(9)
    graphdef, state = nnx_step.split(nnx_models.init_model(jax.random.key(0), cfg), tx)
    _, start = nnx_step.split(nnx_models.init_model(jax.random.key(0), cfg), tx)
    chunk_state, chunk_metrics = nnx_step.make_functional_chunk(graphdef, cfg, tx)(state, data, idx, key)
    step = nnx_step.make_functional_step(graphdef, cfg, tx)
    single = []
    for s in range(idx.shape[0]):
        start, m = step(start, data[idx[s]], key)
        single.append(m)
    assert int(chunk_state.step) == int(start.step) == idx.shape[0]
    for field in js.StepMetrics._fields:
        want = np.array([getattr(m, field) for m in single])
        np.testing.assert_allclose(getattr(chunk_metrics, field), want, rtol=1e-5, err_msg=field)
    for (key_, a), (_, b) in zip(_leaves(chunk_state.params), _leaves(start.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=key_)
