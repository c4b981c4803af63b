"""JAX side of the throughput benchmark: one process times one (preset, mode, precision) over batches.

Modes: jax-jit  = jax_vae's per-step jit (state donated, eps from fold_in(key, step) inside the step);
       jax-scan = the same step scanned with lax.scan over S batches in one jitted call (an epoch,
                  or fewer steps when fewer already fill a timing window);
       jax-scan-mb = jax-scan with cfg.micro_batch: each batch's gradient accumulated over chunks.
Precisions: fp32 (jax_default_matmul_precision=highest), tf32 (=tensorfloat32, GPU), bf16 (GPU: params,
data and eps cast to bf16 for the model, loss/gradients/optimizer in fp32 master weights).
Run: python -m benchmarks.bench_jax --preset P --mode M --precision X --batch-sizes 16,64 --json out.json
"""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from jax_vae.common.config import VAEConfig
from jax_vae.common.presets import get_preset
from jax_vae.losses import objective
from jax_vae.models import VAE, init_params, sample_eps
from jax_vae.optim import make_optimizer
from jax_vae.step import TrainState, create_state, kl_weight, update

MATMUL_PRECISION = {"fp32": "highest", "tf32": "tensorfloat32", "bf16": "default"}


def device_info() -> dict[str, Any]:
    """Platform, device kind and versions of the default JAX backend."""
    d = jax.devices()[0]
    import jaxlib
    return {"framework": "jax", "jax": jax.__version__, "jaxlib": jaxlib.__version__, "platform": d.platform, "device_kind": d.device_kind,
            "device_count": jax.device_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "compute_capability": getattr(d, "compute_capability", None),
            "cpu_threads": common.cpu_threads(),
            "cpu_threads_note": "XLA:CPU sizes its intra-op pool to the visible cores"}


def availability(info: dict[str, Any]) -> dict[str, Any]:
    """Which modes and precisions this backend runs, with the reason for each skip."""
    gpu = info["platform"] in ("gpu", "cuda", "rocm")
    skip = {} if gpu else {
        "tf32": "TF32 is a GPU tensor-core format; XLA:CPU computes FP32 (identical to the fp32 rows)",
        "bf16": "bf16 mixed precision is benchmarked on GPU only (no bf16 matmul units on this CPU path)"}
    cc = info.get("compute_capability")
    if gpu and cc is not None and float(cc) < 8.0:
        skip["tf32"] = skip["bf16"] = f"compute capability {cc} < 8.0 has no TF32/bf16 tensor cores"
    return {"modes": {m: None for m in common.MODES["jax"]},
            "precisions": {p: skip.get(p) for p in common.PRECISIONS}}


def mixed_loss_fn(params: dict, x: jax.Array, eps: jax.Array, cfg: VAEConfig, beta: jax.Array | float,
                  compute_dtype=jnp.bfloat16) -> tuple[jax.Array, dict[str, jax.Array]]:
    """jax_vae.losses.loss_fn with the model run in compute_dtype and the loss terms in fp32."""
    cast = lambda t: t.astype(compute_dtype)
    outputs, mean, scale = VAE(cfg).apply({"params": jax.tree_util.tree_map(cast, params)},
                                          cast(x), cast(eps))                # [L, B, D] in compute dtype
    outputs, mean, scale = (t.astype(jnp.float32) for t in (outputs, mean, scale))
    return objective(outputs, mean, scale, x, eps, cfg, beta)             # fp32 loss terms


def mixed_update(state: TrainState, batch: jax.Array, eps: jax.Array, cfg: VAEConfig, tx,
                 compute_dtype=jnp.bfloat16) -> tuple[TrainState, dict[str, jax.Array]]:
    """jax_vae.step.update with mixed_loss_fn: fp32 master params and optimizer state."""
    import optax
    grad_fn = jax.value_and_grad(mixed_loss_fn, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, batch, eps, cfg, kl_weight(cfg, state.step), compute_dtype)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "recon": aux["recon"].mean(), "kl": aux["kl"].mean(),
               "objective": aux["per_example"].mean(), "finite": jnp.isfinite(loss)}
    return TrainState(state.step + 1, params, opt_state), metrics


def fresh_state(key: jax.Array, cfg: VAEConfig, tx) -> TrainState:
    """Step-0 state built under jit: no op-by-op init, and every leaf its own buffer (jax_vae's
    lua_adam init shares one zeros tree between mu and nu, which a donated step cannot take)."""
    return jax.jit(lambda k: create_state(init_params(k, cfg), tx))(key)


def make_step(cfg: VAEConfig, tx, precision: str) -> Callable:
    """Pure (state, batch [B, D], base_key) -> (state, metrics); eps from fold_in(base_key, step)."""
    upd = (lambda s, b, e: mixed_update(s, b, e, cfg, tx)) if precision == "bf16" else \
          (lambda s, b, e: update(s, b, e, cfg, tx))

    def train_step(state: TrainState, batch: jax.Array, base_key: jax.Array):
        eps = sample_eps(jax.random.fold_in(base_key, state.step), cfg, batch.shape[0])  # [L, B, Z]
        return upd(state, batch, eps)

    return train_step


def make_scan(train_step: Callable) -> Callable:
    """(state, xs [S, B, D], base_key) -> (state, metrics [S]): S steps in one lax.scan."""

    def run_epoch(state: TrainState, xs: jax.Array, base_key: jax.Array):
        return jax.lax.scan(lambda s, x: train_step(s, x, base_key), state, xs)

    return run_epoch


def device_peak_bytes() -> tuple[int | None, str]:
    """(peak device bytes, kind): allocator peak on GPU, VmHWM RSS on CPU."""
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (process running max)"
    return common.peak_rss_bytes(), "process peak RSS (VmHWM, reset per batch size)"


def run_batch(cfg: VAEConfig, mode: str, precision: str, batch: int, timing: dict[str, Any],
              micro_batch: int = common.MICRO_BATCH) -> dict[str, Any]:
    """Time one batch size; returns the record's measured fields."""
    if mode in common.MICRO_MODES:
        cfg = dataclasses.replace(cfg, micro_batch=micro_batch)
    tx = make_optimizer(cfg)
    key = jax.random.PRNGKey(cfg.seed)
    state = fresh_state(key, cfg, tx)
    base_key = jax.random.fold_in(key, 1)
    n_pool = common.pool_batches(batch, dim=cfg.input_dim)
    host = common.synthetic_pool(n_pool, batch, cfg.input_dim)              # [K, B, D]
    pool = [jax.device_put(host[i]) for i in range(n_pool)]
    step_fn = make_step(cfg, tx, precision)
    jit_step = jax.jit(step_fn, donate_argnums=0)
    box = {"state": state, "i": 0}
    sync = lambda: jax.block_until_ready(box["state"])

    def run_jit() -> None:
        box["state"], _ = jit_step(box["state"], pool[box["i"] % n_pool], base_key)
        box["i"] += 1

    extra: dict[str, Any] = {"pool_batches": n_pool, "micro_batch": cfg.micro_batch}
    if mode == "jax-jit":
        run = run_jit
        steps_per_call = 1
    else:
        # Scan length: an epoch of EPOCH_IMAGES, or fewer steps when fewer fill one timing window.
        probe = common.time_unit(run_jit, sync, 1, batch, repeats=1, window_s=0.0,
                                 warmup_s=0.0, min_warmup=2)
        epoch_steps = max(1, common.EPOCH_IMAGES // batch)
        steps_per_call = max(1, min(epoch_steps, math.ceil(timing["window_s"] / probe["step_ms"]["median"] * 1e3)))
        xs = jax.device_put(host[np.arange(steps_per_call) % n_pool])         # [S, B, D] on device
        pool.clear()
        scan_fn = jax.jit(make_scan(step_fn), donate_argnums=0)

        def run() -> None:
            box["state"], _ = scan_fn(box["state"], xs, base_key)

        extra.update(scan_length=steps_per_call, epoch_steps=epoch_steps,
                     probe_jit_step_ms=probe["step_ms"]["median"])
    del host
    gc.collect()
    rss_reset = common.reset_peak_rss()      # peak RSS from here: compile + timed steps of this mode
    rss_before = common.current_rss_bytes()
    result = common.time_unit(run, sync, steps_per_call, batch, **timing)
    result.update(extra)
    loss_ok = all(bool(jnp.isfinite(p).all()) for p in jax.tree_util.tree_leaves(box["state"].params))
    peak, peak_kind = device_peak_bytes()
    result.update(params_finite=loss_ok, steps_done=int(box["state"].step),
                  peak_memory_bytes=peak, peak_memory_kind=peak_kind,
                  rss_before_bytes=rss_before if rss_reset else None)
    return result


def run(preset: str, mode: str, precision: str, batch_sizes: list[int], timing: dict[str, Any],
        micro_batch: int = common.MICRO_BATCH) -> dict[str, Any]:
    """Time every batch size (ascending) of one preset/mode/precision; errors are recorded, not raised."""
    jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION[precision])
    info = device_info()
    cfg = get_preset(preset)
    records = []
    for batch in sorted(batch_sizes):
        rec = {"framework": "jax", "mode": mode, "preset": preset, "precision": precision,
               "batch_size": batch}
        try:
            rec.update(run_batch(cfg, mode, precision, batch, timing, micro_batch), status="ok")
        except Exception as e:  # recorded (e.g. out of memory), the remaining batch sizes still run
            rec.update(status="error", reason=f"{type(e).__name__}: {str(e)[:400]}")
        print(json.dumps({k: rec.get(k) for k in ("mode", "preset", "precision", "batch_size", "status")}
                         | {"img_s": rec.get("images_per_s", {}).get("median")}), flush=True)
        records.append(rec)
    flags = {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
             "mixed_precision": "bf16 model, fp32 loss/master/optimizer" if precision == "bf16" else None}
    return {"info": info, "flags": flags, "records": records}


def main(argv: list[str] | None = None) -> None:
    common.bench_main(argv, __doc__.splitlines()[0], common.MODES["jax"], device_info, availability, run)


if __name__ == "__main__":
    main()
