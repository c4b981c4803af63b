"""Variants of the JAX train step tried while making JAX fast (see benchmarks/PERFORMANCE.md).

Each variant builds a jitted `epoch(state, xs [S, B, D], key) -> state` over the same semantics
(forward + backward + optimizer update with fresh eps every step). `compare` times them interleaved
(A B C A B C ...) in one process, so a busy host disturbs all variants alike.
Run: python -m benchmarks.jax_variants --preset pytorch-examples --batch-sizes 16,128,1024
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from benchmarks.bench_jax import fresh_state, make_step
from jax_vae.common.config import VAEConfig
from jax_vae.common.presets import get_preset
from jax_vae.losses import loss_fn
from jax_vae.models import init_params
from jax_vae.optim import make_optimizer
from jax_vae.step import TrainState, create_state, kl_weight, update
from jax_vae.models import sample_eps


def _key(impl: str) -> jax.Array:
    return jax.random.PRNGKey(1) if impl == "threefry" else jax.random.key(1, impl=impl)


def baseline(cfg: VAEConfig, prng: str = "threefry", unroll: int = 1):
    """The benchmark's jax-scan: per-step eps from fold_in(key, step), optionally another PRNG/unroll."""
    tx = make_optimizer(cfg)
    step = make_step(cfg, tx, "fp32")
    state = fresh_state(jax.random.PRNGKey(0), cfg, tx)

    def epoch(state, xs, key):
        return jax.lax.scan(lambda s, x: step(s, x, key), state, xs, unroll=unroll)[0]

    return jax.jit(epoch, donate_argnums=0), state, _key(prng)


def per_step_jit(cfg: VAEConfig):
    """The jax-jit mode as an 'epoch': a Python loop of the donated jitted step over xs."""
    tx = make_optimizer(cfg)
    step = jax.jit(make_step(cfg, tx, "fp32"), donate_argnums=0)
    state = fresh_state(jax.random.PRNGKey(0), cfg, tx)

    def epoch(state, xs, key):
        for i in range(xs.shape[0]):
            state, _ = step(state, xs[i], key)
        return state

    class Loop:   # the harness calls fn(state, xs, key) and fn.lower(...): a jitted scan stands in for lower
        __call__ = staticmethod(epoch)
        lower = staticmethod(baseline(cfg)[0].lower)

    return Loop(), state, _key("threefry")


def predrawn_eps(cfg: VAEConfig, prng: str = "threefry"):
    """All S steps' eps [S, L, B, Z] drawn in one RNG call before the scan (one kernel, not S)."""
    tx = make_optimizer(cfg)
    state = fresh_state(jax.random.PRNGKey(0), cfg, tx)

    def epoch(state, xs, key):
        eps = jax.random.normal(jax.random.fold_in(key, state.step),
                                (xs.shape[0], cfg.num_samples, xs.shape[1], cfg.latent_dim))
        return jax.lax.scan(lambda s, xe: update(s, xe[0], xe[1], cfg, tx), state, (xs, eps))[0]

    return jax.jit(epoch, donate_argnums=0), state, _key(prng)


def flat_adam(cfg: VAEConfig, prng: str = "threefry"):
    """Parameters and Adam moments kept as one flat f32 vector: one fused optimizer update per step."""
    tx = make_optimizer(cfg)
    params = jax.jit(init_params, static_argnums=1)(jax.random.PRNGKey(0), cfg)
    flat, unravel = ravel_pytree(params)                                        # [P]
    state = create_state(flat, tx)

    def step(state: TrainState, x, key):
        eps = sample_eps(jax.random.fold_in(key, state.step), cfg, x.shape[0])
        loss = lambda f: loss_fn(unravel(f), x, eps, cfg, kl_weight(cfg, state.step))
        (_, _), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)

    def epoch(state, xs, key):
        return jax.lax.scan(lambda s, x: (step(s, x, key), None), state, xs)[0]

    return jax.jit(epoch, donate_argnums=0), state, _key(prng)


VARIANTS: dict[str, Callable] = {
    "baseline": lambda cfg: baseline(cfg),
    "per_step_jit": per_step_jit,
    "rbg": lambda cfg: baseline(cfg, prng="rbg"),
    "unsafe_rbg": lambda cfg: baseline(cfg, prng="unsafe_rbg"),
    "unroll2": lambda cfg: baseline(cfg, unroll=2),
    "predrawn_eps": lambda cfg: predrawn_eps(cfg),
    "flat_adam": lambda cfg: flat_adam(cfg),
    "flat_adam+unsafe_rbg": lambda cfg: flat_adam(cfg, prng="unsafe_rbg"),
    # gradient accumulation over cache-sized chunks (cfg.micro_batch; a no-op when >= the batch)
    "micro2048": lambda cfg: baseline(dataclasses.replace(cfg, micro_batch=2048)),
    "micro1024": lambda cfg: baseline(dataclasses.replace(cfg, micro_batch=1024)),
    "micro512": lambda cfg: baseline(dataclasses.replace(cfg, micro_batch=512)),
}


def compare(preset: str, batch: int, names: list[str], rounds: int = 7, window_s: float = 0.2
            ) -> dict[str, Any]:
    """Median/min ms per step of each variant, windows interleaved across variants."""
    from benchmarks.profile_jax import step_kernels
    cfg = get_preset(preset)
    built, out = {}, {}
    for name in names:
        fn, state, key = VARIANTS[name](cfg)
        xs1 = jnp.asarray(np.random.default_rng(0).random((1, batch, cfg.input_dim), np.float32))
        t = time.perf_counter()
        state = jax.block_until_ready(fn(state, xs1, key))
        probe = time.perf_counter() - t
        t = time.perf_counter()
        state = jax.block_until_ready(fn(state, xs1, key))
        steps = max(1, min(2000, int(window_s / max(time.perf_counter() - t, 1e-6))))
        xs = jnp.asarray(np.random.default_rng(0).random((steps, batch, cfg.input_dim), np.float32))
        kernels = step_kernels(fn.lower(state, xs, key).compile().as_text(), steps)["kernels_per_step"]
        state = jax.block_until_ready(fn(state, xs, key))
        built[name] = [fn, state, key, xs]
        out[name] = {"kernels_per_step": kernels, "steps_per_window": steps, "first_call_s": probe, "ms": []}
    for _ in range(rounds):
        for name in names:
            fn, state, key, xs = built[name]
            t = time.perf_counter()
            built[name][1] = jax.block_until_ready(fn(state, xs, key))
            out[name]["ms"].append(1e3 * (time.perf_counter() - t) / xs.shape[0])
    for name in names:
        ms = out[name].pop("ms")
        out[name].update(ms_median=statistics.median(ms), ms_min=min(ms),
                         images_per_s=batch * 1e3 / statistics.median(ms))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="pytorch-examples")
    p.add_argument("--batch-sizes", default="16,128,1024")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    res = {}
    for b in [int(v) for v in a.batch_sizes.split(",")]:
        res[b] = compare(a.preset, b, a.variants.split(","), a.rounds)
        for name, r in res[b].items():
            print(f"B={b:>6} {name:>22}: {r['ms_median']:8.3f} ms/step (min {r['ms_min']:.3f}), "
                  f"{r['images_per_s']:>10,.0f} img/s, {r['kernels_per_step']:.0f} kernels/step", file=sys.stderr)
    json.dump({"preset": a.preset, "results": res}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
