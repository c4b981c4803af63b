"""The scanned chunk: S train steps as one jitted lax.scan over batches gathered on the device (the
program `train --jit scan` runs, for the Linen and the NNX loss alike), and the progress ticks it sends.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from jax_vae import parallel
from jax_vae.common.config.options import Tick
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.losses import loss_fn
from jax_vae.step import LossFn, TrainState, train_step

Array = jax.Array
TICK_EVERY = 10  # progress callback period inside a scan, in steps


class Progress:
    """Where a compiled chunk's ticks go: the running trainer's callback, set per run (the compiled
    programs are shared between trainers of one program key), or nowhere."""

    def __init__(self) -> None:
        self.target: Tick | None = None

    def __call__(self, step: Array) -> None:
        if self.target is not None:
            self.target(step)


def make_chunk_fn(
    cfg: VAEConfig,
    tx: optax.GradientTransformation,
    progress: Progress | None = None,
    mesh: parallel.Mesh | None = None,
    apply_loss: LossFn = loss_fn,
) -> Callable:
    """chunk(state, data [N, D], idx [S, B], eps_key) -> (state, metrics [S]): lax.scan of
    step.train_step over batches gathered on device. State is donated. progress: tick it every
    TICK_EVERY steps (a host callback). With a mesh: inputs and outputs
    replicated, each gathered batch split over the mesh's 'data' axis. apply_loss: the loss
    differentiated (losses.loss_fn for Linen, nnx_models.params_loss(graphdef) for NNX)."""
    shards = 1 if mesh is None else mesh.size

    def chunk(state: TrainState, data: Array, idx: Array, eps_key: Array):
        def body(state: TrainState, rows: Array):
            batch = data[rows]  # [B, D]
            if mesh is not None:
                batch = jax.lax.with_sharding_constraint(batch, parallel.batch_sharded(mesh))
            state, metrics = train_step(state, batch, eps_key, cfg, tx, shards, apply_loss)
            if progress is not None:
                jax.lax.cond(
                    state.step % TICK_EVERY == 0,
                    lambda s: jax.debug.callback(progress, s),
                    lambda s: None,
                    state.step,
                )
            return state, metrics

        return jax.lax.scan(body, state, idx)

    if mesh is None:
        return jax.jit(chunk, donate_argnums=0)
    repl = parallel.replicated(mesh)
    return jax.jit(chunk, in_shardings=(repl,) * 4, out_shardings=(repl, repl), donate_argnums=0)
