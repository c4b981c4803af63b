"""Time-to-quality workers: train one framework's benchmark mode on real data, evaluating as it goes.

Both workers see the same data order (numpy permutation per epoch, last partial batch dropped),
train in segments of `segment` steps with the benchmark step of `mode`, and after every segment
evaluate the test negative ELBO per image (one z sample per image). The train clock covers the
segments only (synced); evaluation time is reported separately.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from jax_vae.common.config import VAEConfig


def epoch_order(n: int, batch: int, seed: int, epoch: int) -> np.ndarray:
    """Image indices of one epoch as [steps, B]: a seeded permutation, last partial batch dropped."""
    steps = n // batch
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[: steps * batch].reshape(steps, batch)


def _loop(train_segment: Callable[[np.ndarray], None], evaluate: Callable[[], float], n: int,
          cfg: VAEConfig, target: float, max_epochs: int, segment: int) -> dict[str, Any]:
    """Shared loop: segments of steps until the test loss <= target or max_epochs; returns the curve."""
    curve, clock, eval_s, step = [], 0.0, 0.0, 0
    t_wall = time.perf_counter()
    reached = None
    for epoch in range(max_epochs):
        order = epoch_order(n, cfg.batch_size, cfg.seed, epoch)                 # [S, B]
        for start in range(0, len(order), segment):
            idx = order[start:start + segment]
            t = time.perf_counter()
            train_segment(idx)
            clock += time.perf_counter() - t
            step += len(idx)
            t = time.perf_counter()
            loss = evaluate()
            eval_s += time.perf_counter() - t
            curve.append({"step": step, "epoch": step / len(order), "train_clock_s": clock,
                          "wall_s": time.perf_counter() - t_wall, "test_nelbo": loss})
            if reached is None and loss <= target:
                reached = curve[-1]
                break
        if reached is not None:
            break
    return {"curve": curve, "reached": reached is not None, "eval_s": eval_s,
            "time_to_target_s": reached["train_clock_s"] if reached else None,
            "wall_to_target_s": reached["wall_s"] if reached else None,
            "steps_to_target": reached["step"] if reached else None,
            "first_segment_s": curve[0]["train_clock_s"] if curve else None}


def run_jax(cfg: VAEConfig, data: dict[str, np.ndarray], mode: str, target: float, max_epochs: int,
            segment: int) -> dict[str, Any]:
    """JAX: jax-scan runs each segment as one lax.scan call; jax-jit runs one jitted call per step."""
    import jax
    import jax.numpy as jnp

    from benchmarks.bench_jax import device_info, fresh_state, make_scan, make_step
    from jax_vae.losses import loss_fn
    from jax_vae.optim import make_optimizer

    jax.config.update("jax_default_matmul_precision", "highest")
    tx = make_optimizer(cfg)
    key = jax.random.PRNGKey(cfg.seed)
    box = {"state": fresh_state(key, cfg, tx)}
    base_key, eval_key = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    train, test = jax.device_put(data["train"]), jax.device_put(data["test"])    # [N, D]
    step_fn = make_step(cfg, tx, "fp32")
    scan_fn = jax.jit(lambda s, data, idx, k: make_scan(step_fn)(s, data[idx], k), donate_argnums=0)
    jit_step = jax.jit(step_fn, donate_argnums=0)
    eval_fn = jax.jit(lambda p, x, k: loss_fn(p, x, k, cfg)[1]["per_example"].mean())

    def train_segment(idx: np.ndarray) -> None:
        if mode == "jax-scan":
            box["state"], _ = scan_fn(box["state"], train, jnp.asarray(idx), base_key)   # gather [S, B, D]
        else:
            for row in jnp.asarray(idx):
                box["state"], _ = jit_step(box["state"], train[row], base_key)
        jax.block_until_ready(box["state"])

    def evaluate() -> float:
        return float(eval_fn(box["state"].params, test, jax.random.fold_in(eval_key, box["state"].step)))

    out = _loop(train_segment, evaluate, len(data["train"]), cfg, target, max_epochs, segment)
    return out | {"info": device_info()}


def run_torch(cfg: VAEConfig, data: dict[str, np.ndarray], mode: str, target: float, max_epochs: int,
              segment: int) -> dict[str, Any]:
    """PyTorch: the benchmark step of `mode` (eager / compile / compile-ro / cuda-graph), per step."""
    import torch

    from benchmarks import common
    from benchmarks.bench_torch import device_info, set_precision
    from benchmarks.torch_steps import build_step, fast_optimizer
    from torch_reference.losses import loss_fn
    from torch_reference.models import init_params

    torch.set_num_threads(common.cpu_threads())
    set_precision("fp32")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = init_params(cfg.seed, cfg).to(device)
    opt, opt_desc = fast_optimizer(cfg, model, mode, device)
    step, details = build_step(cfg, mode, "fp32", model, opt, cfg.batch_size, device)
    train = torch.from_numpy(data["train"]).to(device)                          # [N, D]
    test = torch.from_numpy(data["test"]).to(device)

    def train_segment(idx: np.ndarray) -> None:
        for row in torch.from_numpy(idx).to(device):
            step(train[row])
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def evaluate() -> float:
        return float(loss_fn(model, test, None, cfg)[1]["per_example"].mean())

    out = _loop(train_segment, evaluate, len(data["train"]), cfg, target, max_epochs, segment)
    return out | {"info": device_info(), "optimizer": opt_desc, "details": details}
