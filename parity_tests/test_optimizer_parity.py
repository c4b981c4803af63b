"""Optimizer steps on their own: optax vs torch for Adam, coupled weight decay and Lua-torch Adam,
10 steps on the same random gradients, every parameter compared after each step."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jax_vae import optim as jo
from jax_vae.common.presets import PRESETS
from parity_tests.harness import DTYPES, variant
from parity_tests.tolerances import assert_close, tol
from torch_reference import optim as to

CASES = {
    "adam": variant(PRESETS["pytorch-examples"]),
    "adam+coupled_wd": variant(PRESETS["minimalist"], weight_decay=1e-2),
    "lua_adam": PRESETS["stutz-rectangles"],
    "lua_adam+wd": variant(PRESETS["stutz-rectangles"], weight_decay=1e-3),
    "adam+iwae_schedule": variant(PRESETS["iwae-paper"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_steps(dtype, case):
    cfg = CASES[case]
    rng = np.random.default_rng(3)
    np_dtype = DTYPES[dtype][0]
    w0 = rng.standard_normal((7, 5)).astype(np_dtype)
    grads = [rng.standard_normal((7, 5)).astype(np_dtype) * 10 ** rng.uniform(-6, 1) for _ in range(10)]
    # JAX half
    tx = jo.make_optimizer(cfg, steps_per_epoch=2)
    params = {"w": jnp.asarray(w0)}
    opt_state = tx.init(params)
    jax_trace = []
    for g in grads:
        updates, opt_state = tx.update({"w": jnp.asarray(g)}, opt_state, params)
        params = optax.apply_updates(params, updates)
        jax_trace.append(np.asarray(params["w"]))
    # torch half
    w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt, sched = to.make_optimizer(cfg, steps_per_epoch=2, foreach=False, fused=False).init([w])
    torch_trace = []
    for g in grads:
        w.grad = torch.from_numpy(g)
        opt.step()
        if sched is not None:
            sched.step()
        torch_trace.append(w.detach().numpy().copy())
    for i, (a, b) in enumerate(zip(jax_trace, torch_trace)):
        assert_close(f"{case}/{dtype}/w after step {i + 1}", a, b, tol(dtype, "forward"))
    assert not np.allclose(jax_trace[-1], w0), f"{case}: parameters did not move"


def test_lua_adam_is_not_torch_adam():
    """eps before the bias correction is a real difference: first step of a tiny gradient."""
    cfg = PRESETS["stutz-rectangles"]
    g = {"w": jnp.full((3,), 1e-9)}
    lua = jo.make_optimizer(cfg)
    std = optax.adam(cfg.lr, eps=cfg.adam_eps)
    u_lua, _ = lua.update(g, lua.init(g), g)
    u_std, _ = std.update(g, std.init(g), g)
    # lua: lr * g / (|g| + eps / sqrt(1 - b2)) ; torch/optax: lr * g / (|g| + eps)
    expected_lua = -1e-3 * 1e-9 / (1e-9 + 1e-8 / np.sqrt(1e-3))
    assert float(u_lua["w"][0]) == pytest.approx(expected_lua, rel=1e-5)
    assert float(u_std["w"][0]) == pytest.approx(-1e-3 * 1e-9 / (1e-9 + 1e-8), rel=1e-5)
