"""JAX side of the throughput benchmark: every mode times the shipped jax_vae step. Mirror of torch_modes.py.

Modes (a call: rows [S, B] of the device dataset, see common.run_batch):
  jax-jit     = what `python -m jax_vae train --jit step` runs per step: the trainer's jitted gather of
                the batch, then jax_vae.step.make_train_step (jitted, state donated, eps from the key
                folded with the step inside the step);
  jax-scan    = what `python -m jax_vae train` (--jit scan) runs: jax_vae.chunk.make_chunk_fn, the
                lax.scan of jax_vae.step.train_step over S batches gathered on the device, one jitted call;
  jax-scan-mb = jax-scan with cfg.micro_batch: each batch's gradient accumulated over chunks;
  nnx-jit     = the idiomatic Flax NNX step, jax_vae.nnx.step.train_step: the NNX model
                (nnx_models.init_model, the trainer's init) and an nnx.Optimizer as mutable objects, one
                @nnx.jit call per step updating both in place (nnx.jit walks their graphs in Python on
                every call), the batch gathered as jax-jit gathers it;
  nnx-scan    = what `python -m jax_vae train --api nnx` runs: jax_vae.chunk.make_chunk_fn with the NNX
                loss (apply_loss=nnx_models.params_loss(graphdef), the graphdef split once), the
                functional style: the lax.scan over S batches on the step.TrainState, nnx.merge only
                inside the traced function, one jax.jit call (the program of nnx_step's functional chunk).
Precisions: fp32 (jax_default_matmul_precision=highest), tf32 (=tensorfloat32, GPU), bf16 (GPU): the
benchmark-only `mixed_train_step` (no shipped bf16 path): params, data and eps cast to bf16 for the
model, loss terms, gradients and optimizer in fp32 master weights (tested equal to the shipped step
at compute dtype fp32).
Run: python -m benchmarks.jax_modes --preset P --mode M --precision X --batch-sizes 16,64 --json out.json
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import common, host
from jax_vae.chunk import make_chunk_fn
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.metrics import StepMetrics
from jax_vae.common.training import plan
from jax_vae.functional import sample_eps
from jax_vae.linen.models import VAE, init_variables
from jax_vae.losses import objective
from jax_vae.nnx import models as nnx_models
from jax_vae.nnx import step as nnx_step
from jax_vae.optim import make_optimizer
from jax_vae.step import TrainState, create_state, kl_weight, make_train_step, step_metrics

MATMUL_PRECISION = {"fp32": "highest", "tf32": "tensorfloat32", "bf16": "default"}
NNX = ("nnx-jit", "nnx-scan")
nnx_train_step: Any = nnx_step.train_step  # @nnx.jit(partial(...)): mypy cannot see through it


def device_info() -> dict[str, Any]:
    """Platform, device kind and versions of the default JAX backend."""
    import jaxlib

    d = jax.devices()[0]
    return {
        "framework": "jax",
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "platform": d.platform,
        "device_kind": d.device_kind,
        "device_count": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compute_capability": getattr(d, "compute_capability", None),
        "cpu_threads": host.cpu_threads(),
        "cpu_threads_note": "XLA:CPU sizes its intra-op pool to the visible cores",
    }


def availability(info: dict[str, Any]) -> dict[str, Any]:
    """Which modes, precisions and pairs of them this backend runs, with the reason for each skip."""
    gpu = info["platform"] in ("gpu", "cuda", "rocm")
    skip = (
        {}
        if gpu
        else {
            "tf32": "TF32 is a GPU tensor-core format; XLA:CPU computes FP32 (identical to the fp32 rows)",
            "bf16": "bf16 mixed precision is benchmarked on GPU only (no bf16 matmul units on this CPU path)",
        }
    )
    cc = info.get("compute_capability")
    if gpu and cc is not None and float(cc) < 8.0:
        skip["tf32"] = skip["bf16"] = f"compute capability {cc} < 8.0 has no TF32/bf16 tensor cores"
    return {
        "modes": {m: None for m in common.MODES["jax"]},
        "precisions": {p: skip.get(p) for p in common.PRECISIONS},
        "pairs": {"jax-scan-mb/bf16": "the benchmark's bf16 mixed step has no micro-batching"}
        | {
            f"{m}/bf16": "the NNX modes are benchmarked in fp32/tf32 (the bf16 mixed step is Linen)"
            for m in NNX
        },
    }


def set_precision(precision: str) -> dict[str, Any]:
    """Pin the default matmul precision of this process; returns the flags read back."""
    jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION[precision])
    return {
        "jax_default_matmul_precision": jax.config.values["jax_default_matmul_precision"],
        "mixed_precision": "bf16 model, fp32 loss/master/optimizer" if precision == "bf16" else None,
    }


def put(a: np.ndarray) -> jax.Array:
    """Onto the default device, as the trainer puts its data and each chunk's rows."""
    return jax.device_put(a)


def mixed_loss_fn(
    params: dict,
    x: jax.Array,
    eps: jax.Array,
    cfg: VAEConfig,
    beta: jax.Array | float,
    compute_dtype: Any = jnp.bfloat16,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """jax_vae.losses.loss_fn with the model run in compute_dtype and the loss terms in fp32."""
    cast = lambda t: t.astype(compute_dtype)
    out: Any = VAE(cfg).apply({"params": jax.tree_util.tree_map(cast, params)}, cast(x), cast(eps))
    outputs, mean, scale = (t.astype(jnp.float32) for t in out)  # [L, B, D], [B, Z] x2
    return objective(outputs, mean, scale, x, eps, cfg, beta)  # fp32 loss terms


def mixed_train_step(
    state: TrainState,
    batch: jax.Array,
    key: jax.Array,
    cfg: VAEConfig,
    tx: optax.GradientTransformation,
    compute_dtype: Any = jnp.bfloat16,
) -> tuple[TrainState, StepMetrics]:
    """jax_vae.step.train_step (same eps stream and metrics) with mixed_loss_fn: fp32 master params
    and optimizer state; benchmark-only, whole batch (no cfg.micro_batch)."""
    eps = sample_eps(jax.random.fold_in(key, state.step), cfg, batch.shape[0], dtype=batch.dtype)
    grad_fn = jax.value_and_grad(mixed_loss_fn, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, batch, eps, cfg, kl_weight(cfg, state.step), compute_dtype)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = step_metrics(loss, aux, cfg.latent_dim)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), metrics


def program(cfg: VAEConfig, mode: str, precision: str, tx: optax.GradientTransformation) -> Any:
    """The jitted program a mode calls: (state, batch [B, D], key) for jax-jit, (state, data [N, D],
    idx [S, B], key) for the scans; the shipped ones, bf16 the mixed twins with the same signatures."""
    if mode not in common.MODES["jax"]:
        raise ValueError(f"unknown jax mode {mode!r}")
    if precision != "bf16":
        return make_train_step(cfg, tx) if mode == "jax-jit" else make_chunk_fn(cfg, tx)
    if cfg.micro_batch:
        raise ValueError("the bf16 mixed step has no micro-batching")
    step = functools.partial(mixed_train_step, cfg=cfg, tx=tx)
    if mode == "jax-jit":
        return jax.jit(step, donate_argnums=0)

    def chunk(state: TrainState, data: jax.Array, idx: jax.Array, key: jax.Array):
        return jax.lax.scan(lambda s, rows: step(s, data[rows], key), state, idx)  # as make_chunk_fn

    return jax.jit(chunk, donate_argnums=0)


def initial_state(cfg: VAEConfig, tx: optax.GradientTransformation) -> TrainState:
    """The trainer's step-0 state: built under jit from the init stream (every leaf its own buffer)."""
    init_key = jax.random.fold_in(jax.random.key(cfg.seed), plan.Stream.INIT)

    def init(key: jax.Array) -> TrainState:
        variables = init_variables(key, cfg)  # params, and a BatchNorm model's running statistics
        return create_state(variables["params"], tx, variables.get("batch_stats"))

    return jax.jit(init)(init_key)


def build_step(
    cfg: VAEConfig, mode: str, precision: str, batch_size: int, steps_per_epoch: int
) -> tuple[common.Run, Any, dict[str, Any]]:
    """(run(state, data [N, D], rows [S, B]) -> (state, metrics), step-0 state, details) for one mode."""
    if mode in NNX:
        return build_nnx_step(cfg, mode, precision, steps_per_epoch)
    tx = make_optimizer(cfg, steps_per_epoch=steps_per_epoch)
    fn = program(cfg, mode, precision, tx)
    eps_key = jax.random.fold_in(jax.random.key(cfg.seed), plan.Stream.EPS)
    shipped = "jax_vae.step.make_train_step" if mode == "jax-jit" else "jax_vae.chunk.make_chunk_fn"
    details = {
        "step": shipped if precision != "bf16" else f"benchmarks.jax_modes.mixed_train_step ({mode})",
        "optimizer": f"jax_vae.optim.make_optimizer ({cfg.optimizer})",
    }
    if mode == "jax-jit":
        return per_step(fn, eps_key), initial_state(cfg, tx), details
    return (lambda state, data, rows: fn(state, data, rows, eps_key)), initial_state(cfg, tx), details


def per_step(step: Any, eps_key: jax.Array) -> common.Run:
    """run(state, data, rows [S, B]) calling step(state, batch [B, D], eps_key) once per row of S, each
    batch gathered as the trainer's --jit step gathers it (a jitted data[idx[s]], host row index)."""
    gather = jax.jit(lambda data, rows: data[rows])

    def run(state: Any, data: jax.Array, rows: jax.Array) -> tuple[Any, StepMetrics]:
        idx = np.asarray(rows)  # the trainer holds the chunk's rows on the host and gathers idx[s]
        for s in range(idx.shape[0]):
            state, metrics = step(state, gather(data, idx[s]), eps_key)
        return state, metrics

    return run


@dataclasses.dataclass
class NNXObjects:
    """The nnx-jit state: the NNX model and its nnx.Optimizer (mutable, updated in place by a step)."""

    model: nnx_models.VAE
    optimizer: nnx.Optimizer

    @property
    def params(self) -> dict:
        return nnx_models.to_linen_params(self.model)

    @property
    def step(self) -> jax.Array:
        return nnx_step.optimizer_step(self.optimizer)


def build_nnx_step(
    cfg: VAEConfig, mode: str, precision: str, steps_per_epoch: int
) -> tuple[common.Run, Any, dict[str, Any]]:
    """build_step of nnx-jit (nnx_step.train_step on NNXObjects) and nnx-scan (the functional chunk)."""
    if precision == "bf16":
        raise ValueError("the NNX modes have no bf16 mixed step")
    tx = make_optimizer(cfg, steps_per_epoch=steps_per_epoch)
    eps_key = jax.random.fold_in(jax.random.key(cfg.seed), plan.Stream.EPS)
    init_key = jax.random.fold_in(jax.random.key(cfg.seed), plan.Stream.INIT)
    details = {"optimizer": f"jax_vae.optim.make_optimizer ({cfg.optimizer})", "api": "nnx"}
    if mode == "nnx-jit":
        model = nnx_models.init_model(init_key, cfg)
        objects = NNXObjects(model, nnx_step.create_optimizer(model, tx))

        def step(state: NNXObjects, batch: jax.Array, key: jax.Array) -> tuple[NNXObjects, StepMetrics]:
            return state, nnx_train_step(state.model, state.optimizer, batch, key, cfg)

        return per_step(step, eps_key), objects, details | {"step": "jax_vae.nnx.step.train_step"}
    graphdef = nnx.graphdef(nnx_models.abstract_model(cfg))  # as train.programs builds it for api="nnx"
    chunk = make_chunk_fn(cfg, tx, apply_loss=nnx_models.params_loss(graphdef))
    init = lambda k: nnx_step.split(nnx_models.init_model(k, cfg), tx)[1]  # params and batch_stats
    details["step"] = "jax_vae.chunk.make_chunk_fn (apply_loss=nnx_models.params_loss)"
    return (lambda state, data, rows: chunk(state, data, rows, eps_key)), jax.jit(init)(init_key), details


def sync(state: Any) -> None:
    """Wait for the state's arrays (NNXObjects: the model's and optimizer's nnx state)."""
    jax.block_until_ready(
        nnx.state((state.model, state.optimizer)) if isinstance(state, NNXObjects) else state
    )


def begin_batch() -> None:
    """Nothing to reset: each batch size builds its own programs."""


def end_batch(state: Any) -> dict[str, Any]:
    """Steps done, finite parameters and the peak memory of this batch size."""
    finite = all(bool(jnp.isfinite(p).all()) for p in jax.tree_util.tree_leaves(state.params))
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        peak, kind = int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (process running max)"
    else:
        peak, kind = host.peak_rss_bytes(), "process peak RSS (VmHWM, reset per batch size)"
    return {
        "steps_done": int(state.step),
        "params_finite": finite,
        "peak_memory_bytes": peak,
        "peak_memory_kind": kind,
    }


def make_eval(cfg: VAEConfig, test: jax.Array) -> Any:
    """state -> test -ELBO per image (beta = 1) on test [M, D], the same eval noise every call."""
    from jax_vae.losses import loss_fn

    key = jax.random.fold_in(jax.random.key(cfg.seed), plan.Stream.EVAL)
    fn = jax.jit(lambda p, x, k: loss_fn(p, x, k, cfg, beta=1.0)[1]["per_example"].mean())
    return lambda state: float(fn(state.params, test, key))


if __name__ == "__main__":
    common.bench_main(sys.argv[1:], sys.modules[__name__], "jax", __doc__.splitlines()[0])
