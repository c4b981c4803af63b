"""Optimizer steps on their own: optax vs torch for Adam, coupled weight decay, Lua-torch Adam (and
LuaAdam's foreach step) and the IWAE and per-epoch exponential schedules, 10 steps on the same random
gradients, every parameter compared after each step (and the learning rate of every step)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jax_vae import optim as jo
from jax_vae.common.config.presets import PRESETS
from parity_tests.harness import DTYPES, variant
from parity_tests.tolerances import assert_close, tol
from torch_reference import optim as to

CASES = {
    "adam": variant(PRESETS["pytorch-examples"]),
    "adam+coupled_wd": variant(PRESETS["minimalist"], weight_decay=1e-2),
    "lua_adam": PRESETS["stutz-rectangles"],
    "lua_adam+wd": variant(PRESETS["stutz-rectangles"], weight_decay=1e-3),
    "adam+iwae_schedule": variant(PRESETS["iwae-paper"]),
    # AntixK's Adam(lr 0.005) with ExponentialLR stepped per epoch; gamma 0.5 so 5 epochs of 2 steps
    # move the rate by 16x (0.95 would be within the float32 tolerance of a constant rate)
    "adam+exponential_schedule": variant(
        PRESETS["pytorch-examples"], lr=0.005, lr_schedule="exponential", lr_gamma=0.5
    ),
}


def _problem(dtype: str, shapes: dict[str, tuple[int, ...]], steps: int = 10, seed: int = 3):
    """Initial parameters and `steps` random gradients spanning 7 decades, per named tensor."""
    rng = np.random.default_rng(seed)
    np_dtype = DTYPES[dtype][0]
    w0 = {k: rng.standard_normal(s).astype(np_dtype) for k, s in shapes.items()}
    grads = [
        {k: rng.standard_normal(s).astype(np_dtype) * 10 ** rng.uniform(-6, 1) for k, s in shapes.items()}
        for _ in range(steps)
    ]
    return w0, grads


def _jax_trace(cfg, w0: dict, grads: list[dict]) -> list[dict]:
    """The parameters after each optax step."""
    tx = jo.make_optimizer(cfg, steps_per_epoch=2)
    params = {k: jnp.asarray(v) for k, v in w0.items()}
    opt_state = tx.init(params)
    trace = []
    for g in grads:
        updates, opt_state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, opt_state, params)
        params = optax.apply_updates(params, updates)
        trace.append({k: np.asarray(v) for k, v in params.items()})
    return trace


def _torch_trace(
    cfg, w0: dict, grads: list[dict], foreach: bool = False
) -> tuple[list[dict], torch.optim.Optimizer]:
    """(the parameters after each torch step, the optimizer)."""
    ws = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in w0.items()}
    opt, sched = to.make_optimizer(cfg, steps_per_epoch=2, foreach=foreach, fused=False).init(ws.values())
    trace = []
    for g in grads:
        for k, w in ws.items():
            w.grad = torch.from_numpy(g[k])
        opt.step()
        if sched is not None:
            sched.step()
        trace.append({k: w.detach().numpy().copy() for k, w in ws.items()})
    return trace, opt


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_steps(dtype, case):
    cfg = CASES[case]
    w0, grads = _problem(dtype, {"w": (7, 5)})
    jax_trace, (torch_trace, _) = _jax_trace(cfg, w0, grads), _torch_trace(cfg, w0, grads)
    for i, (a, b) in enumerate(zip(jax_trace, torch_trace)):
        assert_close(f"{case}/{dtype}/w after step {i + 1}", a["w"], b["w"], tol(dtype, "forward"))
    assert not np.allclose(jax_trace[-1]["w"], w0["w"]), f"{case}: parameters did not move"


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c].optimizer == "lua_adam"])
def test_foreach_lua_adam_equals_lua_adam_and_jax(dtype, case):
    """LuaAdam(foreach=True), the multi-tensor step with device step counts that the benchmarks
    time, against the reference LuaAdam and JAX's lua_adam: two tensors in one multi-tensor kernel,
    every parameter after each of 10 steps."""
    cfg = CASES[case]
    w0, grads = _problem(dtype, {"w": (7, 5), "b": (5,)})
    jax_trace = _jax_trace(cfg, w0, grads)
    ref_trace, _ = _torch_trace(cfg, w0, grads)
    fast_trace, opt = _torch_trace(cfg, w0, grads, foreach=True)
    counts = [s["t"] for s in opt.state.values()]
    assert all(isinstance(t, torch.Tensor) and t.item() == len(grads) for t in counts), counts
    for i, (ref, fast, jx) in enumerate(zip(ref_trace, fast_trace, jax_trace)):
        for k in w0:
            assert_close(
                f"{case}/{dtype}/{k} foreach vs LuaAdam, step {i + 1}", fast[k], ref[k], tol(dtype, "forward")
            )
            assert_close(
                f"{case}/{dtype}/{k} JAX vs foreach, step {i + 1}", jx[k], fast[k], tol(dtype, "forward")
            )
    assert not np.allclose(fast_trace[-1]["w"], w0["w"]), f"{case}: parameters did not move"


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


@pytest.mark.parametrize("gamma", [0.95, 0.5])
def test_exponential_lr_every_step(dtype, gamma):
    """The rate of every step over 4 epochs of 3 steps: optax's schedule at the step count against the
    torch optimizer's lr (EpochExponentialLR stepped after each step), both lr * gamma**(step // 3)."""
    cfg = variant(PRESETS["pytorch-examples"], lr=0.005, lr_schedule="exponential", lr_gamma=gamma)
    schedule = jo.exponential_lr_schedule(cfg.lr, cfg.lr_gamma, steps_per_epoch=3)
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64 if dtype == "float64" else torch.float32))
    opt, sched = to.make_optimizer(cfg, steps_per_epoch=3, foreach=False, fused=False).init([w])
    assert sched is not None
    for step in range(12):
        expected = cfg.lr * gamma ** (step // 3)
        got_torch = opt.param_groups[0]["lr"]
        assert_close(
            f"torch lr, step {step}", np.float64(got_torch), np.float64(expected), tol(dtype, "forward")
        )
        got_jax = np.asarray(schedule(jnp.asarray(step)), np.float64)
        assert_close(f"jax lr, step {step}", got_jax, np.float64(got_torch), tol(dtype, "forward"))
        w.grad = torch.ones_like(w)
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert state["calls"] == 12 and state["last_epoch"] == 4, state
