"""Variants of the JAX train step tried while making JAX fast (see benchmarks/investigations/PERFORMANCE.md).

Each variant builds `epoch(state, data [N, D], idx [S, B], key) -> (state, ...)` with the semantics of
the shipped chunk (gather each batch on the device, forward + backward + optimizer update, fresh eps
every step): `baseline` is jax_vae.chunk.make_chunk_fn itself (the jax-scan mode), the others change
one thing around the shipped jax_vae.step.train_step / update. `compare` times them interleaved
(A B C A B C ...) in one process, so a busy host disturbs all variants alike.
Run: python -m benchmarks.investigations.jax_variants --preset pytorch-examples --batch-sizes 16,128,1024
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
from jax.flatten_util import ravel_pytree

from benchmarks import common
from benchmarks.jax_modes import initial_state
from jax_vae.chunk import make_chunk_fn
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.optim import make_optimizer
from jax_vae.step import TrainState, make_train_step, train_step, update


class Variant(NamedTuple):
    """epoch(state, data, idx, key), its step-0 state and key, and hlo(state, data, idx, key) ->
    (compiled HLO text, train steps one execution of it runs)."""

    epoch: Callable
    state: TrainState
    key: jax.Array
    hlo: Callable[..., tuple[str, int]]


def _scan(fn: Any, state: TrainState, key: jax.Array) -> Variant:
    """A variant whose epoch is one jitted program over the whole idx."""
    return Variant(fn, state, key, lambda s, d, i, k: (fn.lower(s, d, i, k).compile().as_text(), i.shape[0]))


def baseline(cfg: VAEConfig, prng: str = "threefry2x32", unroll: int = 1) -> Variant:
    """The shipped chunk (jax-scan); with another PRNG implementation or a scan unroll, the same
    body (train_step on the gathered batch) under lax.scan(unroll=...)."""
    tx = make_optimizer(cfg)
    fn = make_chunk_fn(cfg, tx)
    if unroll != 1:

        def epoch(state, data, idx, key):
            body = lambda s, rows: train_step(s, data[rows], key, cfg, tx)
            return jax.lax.scan(body, state, idx, unroll=unroll)

        fn = jax.jit(epoch, donate_argnums=0)
    return _scan(fn, initial_state(cfg, tx), jax.random.key(1, impl=prng))


def per_step_jit(cfg: VAEConfig) -> Variant:
    """The jax-jit mode as an 'epoch': a Python loop of the trainer's gather + make_train_step."""
    tx = make_optimizer(cfg)
    step: Any = make_train_step(cfg, tx)  # jitted: has .lower
    gather = jax.jit(lambda data, rows: data[rows])

    def epoch(state, data, idx, key):
        for i in range(idx.shape[0]):
            state, metrics = step(state, gather(data, idx[i]), key)
        return state, metrics

    hlo = lambda s, d, i, k: (step.lower(s, d[i[0]], k).compile().as_text(), 1)
    return Variant(epoch, initial_state(cfg, tx), jax.random.key(1), hlo)


def predrawn_eps(cfg: VAEConfig) -> Variant:
    """All S steps' eps [S, L, B, Z] drawn in one RNG call before the scan (one kernel, not S): a
    different random stream by design, so it calls the shipped update with its own eps."""
    tx = make_optimizer(cfg)

    def epoch(state, data, idx, key):
        shape = (idx.shape[0], cfg.num_samples, idx.shape[1], cfg.latent_dim)
        eps = jax.random.normal(jax.random.fold_in(key, state.step), shape)  # [S, L, B, Z]
        return jax.lax.scan(lambda s, re: update(s, data[re[0]], re[1], cfg, tx), state, (idx, eps))

    return _scan(jax.jit(epoch, donate_argnums=0), initial_state(cfg, tx), jax.random.key(1))


def flat(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """tx on one flat f32 vector of every parameter: one fused optimizer update per step."""

    def update_fn(grads, state, params):
        flat_params, unravel = ravel_pytree(params)  # [P]
        updates, state = tx.update(ravel_pytree(grads)[0], state, flat_params)
        return unravel(updates), state

    return optax.GradientTransformation(lambda params: tx.init(ravel_pytree(params)[0]), update_fn)


def flat_adam(cfg: VAEConfig, prng: str = "threefry2x32") -> Variant:
    """The shipped chunk with the optimizer state and update on one flat vector."""
    tx = flat(make_optimizer(cfg))
    return _scan(make_chunk_fn(cfg, tx), initial_state(cfg, tx), jax.random.key(1, impl=prng))


VARIANTS: dict[str, Callable[[VAEConfig], Variant]] = {
    "baseline": lambda cfg: baseline(cfg),
    "per_step_jit": per_step_jit,
    "rbg": lambda cfg: baseline(cfg, prng="rbg"),
    "unsafe_rbg": lambda cfg: baseline(cfg, prng="unsafe_rbg"),
    "unroll2": lambda cfg: baseline(cfg, unroll=2),
    "predrawn_eps": predrawn_eps,
    "flat_adam": lambda cfg: flat_adam(cfg),
    "flat_adam+unsafe_rbg": lambda cfg: flat_adam(cfg, prng="unsafe_rbg"),
    # gradient accumulation over cache-sized chunks (cfg.micro_batch; a no-op when >= the batch)
    "micro2048": lambda cfg: baseline(dataclasses.replace(cfg, micro_batch=2048)),
    "micro1024": lambda cfg: baseline(dataclasses.replace(cfg, micro_batch=1024)),
    "micro512": lambda cfg: baseline(dataclasses.replace(cfg, micro_batch=512)),
}


def compare(
    preset: str, batch: int, names: list[str], rounds: int = 7, window_s: float = 0.2
) -> dict[str, Any]:
    """Median/min ms per step of each variant on the benchmark's device dataset, windows interleaved."""
    from benchmarks.investigations.profile_jax import step_kernels

    cfg = get_preset(preset)
    data = jax.device_put(common.synthetic_data(common.EPOCH_IMAGES, cfg.input_dim))  # [N, D]
    order = common.epoch_rows(cfg.seed, 0, common.EPOCH_IMAGES, batch)  # [S_epoch, B]
    built: dict[str, list] = {}
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        v = VARIANTS[name](cfg)
        one = jax.device_put(order[:1])
        t = time.perf_counter()
        state, _ = jax.block_until_ready(v.epoch(v.state, data, one, v.key))
        probe = time.perf_counter() - t
        t = time.perf_counter()
        state, _ = jax.block_until_ready(v.epoch(state, data, one, v.key))
        steps = max(1, min(2000, len(order), int(window_s / max(time.perf_counter() - t, 1e-6))))
        idx = jax.device_put(order[:steps])  # [S, B]
        text, n = v.hlo(state, data, idx, v.key)
        state, _ = jax.block_until_ready(v.epoch(state, data, idx, v.key))
        built[name] = [v, state, idx]
        out[name] = {
            "kernels_per_step": step_kernels(text, n)["kernels_per_step"],
            "steps_per_window": steps,
            "first_call_s": probe,
            "ms": [],
        }
    for _ in range(rounds):
        for name in names:
            v, state, idx = built[name]
            t = time.perf_counter()
            built[name][1], _ = jax.block_until_ready(v.epoch(state, data, idx, v.key))
            out[name]["ms"].append(1e3 * (time.perf_counter() - t) / idx.shape[0])
    for name in names:
        ms = out[name].pop("ms")
        out[name].update(
            ms_median=statistics.median(ms), ms_min=min(ms), images_per_s=batch * 1e3 / statistics.median(ms)
        )
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
            print(
                f"B={b:>6} {name:>22}: {r['ms_median']:8.3f} ms/step (min {r['ms_min']:.3f}), "
                f"{r['images_per_s']:>10,.0f} img/s, {r['kernels_per_step']:.0f} kernels/step",
                file=sys.stderr,
            )
    json.dump({"preset": a.preset, "results": res}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
