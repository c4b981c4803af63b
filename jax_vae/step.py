"""The pure train step: (state, batch, key) -> (state, metrics), jit-compiled once per config.

Mirror of torch_reference/step.py. `update` takes eps directly (parity tests inject it);
`train_step` draws eps from fold_in(key, state.step) itself, so the trainer, the benchmarks and the
tests call one definition; `make_train_step` jits it with the config closed over and the state donated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.metrics import StepMetrics
from jax_vae.functional import sample_eps
from jax_vae.losses import loss_fn

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]  # (params, x, eps, cfg, beta) -> (loss, aux)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training: step count, parameters, optimizer state."""

    step: Array
    params: dict
    opt_state: optax.OptState
    batch_stats: dict = flax.struct.field(default_factory=dict)  # BatchNorm running statistics, or {}


def create_state(
    params: dict, tx: optax.GradientTransformation, batch_stats: dict | None = None
) -> TrainState:
    """Step 0 state for `params` (and a BatchNorm model's initial running statistics)."""
    return TrainState(
        step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params), batch_stats=batch_stats or {}
    )


def kl_weight(cfg: VAEConfig, step: Array) -> Array:
    """beta_t = beta * min(1, (step + 1) / warmup); beta when warm-up is off."""
    if cfg.kl_warmup_steps <= 0:
        return jnp.asarray(cfg.beta)
    t = (step + 1).astype(jnp.result_type(float))  # int32 / int would round to float32 under x64
    return cfg.beta * jnp.minimum(1.0, t / cfg.kl_warmup_steps)


def _chunk_value_and_grad(
    params: dict,
    x: Array,
    eps: Array,
    cfg: VAEConfig,
    beta: Array,
    weight: float,
    apply_loss: LossFn = loss_fn,
) -> tuple[tuple[Array, dict[str, Array]], dict]:
    """((weight * sum_i l_i, aux), grads) over one chunk x [m, D], eps [L, m, Z]."""

    def chunk_loss(p: dict) -> tuple[Array, dict[str, Array]]:
        _, aux = apply_loss(p, x, eps, cfg, beta)
        return aux["per_example"].sum() * weight, aux

    return jax.value_and_grad(chunk_loss, has_aux=True)(params)


def _split(a: Array, m: int, shards: int) -> tuple[Array, Array]:
    """a [B, ...] -> (chunks [n, m, ...], rest [R, ...]). Chunk j takes the j-th block of m/shards
    rows from each of the `shards` equal row blocks (data-parallel shards), so every chunk spans
    every device and no row changes device; with shards = 1, chunk j is rows [j*m, (j+1)*m)."""
    per_shard, k = a.shape[0] // shards, m // shards
    n, tail = per_shard // k, a.shape[1:]
    blocks = a.reshape(shards, per_shard, *tail)  # [S, B/S, ...]
    chunks = blocks[:, : n * k].reshape(shards, n, k, *tail).swapaxes(0, 1)  # [n, S, m/S, ...]
    return chunks.reshape(n, m, *tail), blocks[:, n * k :].reshape(-1, *tail)


def _merge(chunks: Array, rest: Array, shards: int) -> Array:
    """Inverse of _split for per-example values: chunks [n, m], rest [R] -> [B] in batch order."""
    n, m = chunks.shape
    per_chunk = chunks.reshape(n, shards, m // shards).swapaxes(0, 1).reshape(shards, -1)
    return jnp.concatenate([per_chunk, rest.reshape(shards, -1)], axis=1).reshape(-1)


def value_and_grad(
    params: dict,
    batch: Array,
    eps: Array,
    cfg: VAEConfig,
    beta: Array,
    shards: int = 1,
    apply_loss: LossFn = loss_fn,
) -> tuple[tuple[Array, dict[str, Array]], dict]:
    """((loss, aux), grads) of loss_fn on batch [B, D]. With cfg.micro_batch = m in (0, B) the
    batch runs as a lax.scan over chunks of m examples (plus one shorter chunk when m does not
    divide B) and loss = sum_chunks w * sum_i l_i, w = 1 (sum) or 1/B (mean): the same loss and
    gradient up to summation order, with activations the size of one chunk (less memory,
    cache-sized GEMMs on CPU). `shards` (data-parallel devices) must divide B and m; under data
    parallelism XLA all-reduces each chunk's gradient, so there it trades memory for n all-reduces.
    `apply_loss`: the (params, x, eps, cfg, beta) -> (loss, aux) differentiated (losses.loss_fn, Linen;
    nnx_models.params_loss(graphdef), NNX)."""
    n_batch, m = batch.shape[0], cfg.micro_batch
    if m <= 0 or m >= n_batch:
        return jax.value_and_grad(apply_loss, has_aux=True)(params, batch, eps, cfg, beta)
    if n_batch % shards or m % shards:
        raise ValueError(
            f"micro_batch {m} and batch {n_batch} must be multiples of the {shards} data-parallel devices"
        )
    weight = 1.0 if cfg.reduction == "sum" else 1.0 / n_batch
    xs, x_rest = _split(batch, m, shards)  # [n, m, D], [R, D]
    es, e_rest = _split(eps.swapaxes(0, 1), m, shards)  # [n, m, L, Z], [R, L, Z]
    es, e_rest = es.transpose(0, 2, 1, 3), e_rest.swapaxes(0, 1)  # [n, L, m, Z], [L, R, Z]
    chunk_fn = lambda x, e: _chunk_value_and_grad(params, x, e, cfg, beta, weight, apply_loss)

    def body(acc, chunk):
        (loss, aux), grads = chunk_fn(*chunk)
        return jax.tree_util.tree_map(jnp.add, acc, (loss, grads)), aux

    (loss0, _), grads0 = jax.eval_shape(chunk_fn, xs[0], es[0])
    zeros = jax.tree_util.tree_map(lambda t: jnp.zeros(t.shape, t.dtype), (loss0, grads0))
    (loss, grads), aux = jax.lax.scan(body, zeros, (xs, es))  # aux leaves [n, m]
    if x_rest.shape[0]:  # the shorter chunk
        (r_loss, r_aux), r_grads = chunk_fn(x_rest, e_rest)
        loss, grads = jax.tree_util.tree_map(jnp.add, (loss, grads), (r_loss, r_grads))
    else:
        r_aux = {k: jnp.zeros([0], v.dtype) for k, v in aux.items()}
    return (loss, {k: _merge(aux[k], r_aux[k], shards) for k in aux}), grads  # aux leaves [B]


def latent_stats(aux: dict[str, Array], latent_dim: int) -> tuple[Array, Array, Array]:
    """(mean mu, unbiased std logvar, mean logvar) over the n = B * Z entries, from the per-example sums
    [B] of loss_fn's aux: std^2 = (sum_i dev2_i + Z sum_i (logvar_sum_i / Z - mean)^2) / max(n - 1, 1)."""
    n = aux["mu_sum"].shape[0] * latent_dim
    logvar_mean = aux["logvar_sum"].sum() / n
    between = jnp.square(aux["logvar_sum"] / latent_dim - logvar_mean).sum() * latent_dim
    logvar_std = jnp.sqrt((aux["logvar_dev2"].sum() + between) / max(n - 1, 1))
    return aux["mu_sum"].sum() / n, logvar_std, logvar_mean


def step_metrics(loss: Array, aux: dict[str, Array], latent_dim: int) -> StepMetrics:
    """StepMetrics from the batch loss and the per-example aux [B] of value_and_grad (not differentiated)."""
    mu_mean, logvar_std, logvar_mean = latent_stats(aux, latent_dim)
    return StepMetrics(
        loss=aux["per_example"].mean(),
        recon=aux["recon"].mean(),
        kl=aux["kl"].mean(),
        mu_mean=mu_mean,
        logvar_std=logvar_std,
        logvar_mean=logvar_mean,
        batch_loss=loss,
        finite=jnp.isfinite(loss),
    )


def update(
    state: TrainState,
    batch: Array,
    eps: Array,
    cfg: VAEConfig,
    tx: optax.GradientTransformation,
    shards: int = 1,
    apply_loss: LossFn = loss_fn,
) -> tuple[TrainState, StepMetrics]:
    """One optimizer step on batch [B, D] with injected eps [L, B, Z]; a BatchNorm model normalizes
    with the batch statistics and carries the updated running ones (no micro-batches: config check)."""
    beta = kl_weight(cfg, state.step)
    if state.batch_stats:
        apply_loss = functools.partial(apply_loss, batch_stats=state.batch_stats)
    (loss, aux), grads = value_and_grad(state.params, batch, eps, cfg, beta, shards, apply_loss)
    batch_stats: Any = aux.pop("batch_stats", state.batch_stats)  # a tree, not one Array
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = step_metrics(loss, aux, cfg.latent_dim)
    return TrainState(state.step + 1, params, opt_state, batch_stats), metrics


def train_step(
    state: TrainState,
    batch: Array,
    key: Array,
    cfg: VAEConfig,
    tx: optax.GradientTransformation,
    shards: int = 1,
    apply_loss: LossFn = loss_fn,
) -> tuple[TrainState, StepMetrics]:
    """eps ~ N(0, I) from fold_in(key, state.step), then `update`. `shards`: data-parallel devices the
    batch is split over (micro-batches span all of them; see jax_vae/parallel.py)."""
    eps = sample_eps(jax.random.fold_in(key, state.step), cfg, batch.shape[0], dtype=batch.dtype)
    return update(state, batch, eps, cfg, tx, shards, apply_loss)


def make_train_step(
    cfg: VAEConfig, tx: optax.GradientTransformation
) -> Callable[[TrainState, Array, Array], tuple[TrainState, StepMetrics]]:
    """train_step(state, batch, key) with cfg and tx closed over, jitted once, state donated."""
    return jax.jit(functools.partial(train_step, cfg=cfg, tx=tx), donate_argnums=0)
