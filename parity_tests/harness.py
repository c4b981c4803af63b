"""Shared set-up for the parity suite and report: one torch model and its converted Flax params,
the same numpy inputs and eps on both sides, and each side's loss, gradients and trajectory.

Import only after `parity_tests.conftest` (or `report`) has set jax_enable_x64 and matmul precision.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from jax_vae import optim as jo
from jax_vae import step as js
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.data.datasets import make_rectangles
from jax_vae.common.weights import convert
from jax_vae.linen.models import VAE as JaxVAE
from jax_vae.linen.models import split_weights, weights
from jax_vae.losses import loss_fn as jax_loss_fn
from jax_vae.nnx import models as nnx_models
from jax_vae.nnx import step as nnx_step
from torch_reference import optim as to
from torch_reference import step as ts
from torch_reference.nn.models import VAE as TorchVAE
from torch_reference.nn.models import init_params as torch_init

DTYPES: dict[str, tuple[type[np.floating], torch.dtype]] = {
    "float64": (np.float64, torch.float64),
    "float32": (np.float32, torch.float32),
}
BATCH = 16
APIS = ("linen", "nnx")  # the JAX half's model API: Linen params + apply, or the NNX module (nnx_models)
STEPS_PER_EPOCH = 10  # only the iwae lr schedule reads it: boundaries land at steps 10, 40


def setup_pair(cfg: VAEConfig, dtype: str, seed: int = 0) -> tuple[TorchVAE, dict]:
    """A torch model from `seed` and the same weights as Flax params (through the converter)."""
    np_dtype, torch_dtype = DTYPES[dtype]
    model = torch_init(seed, cfg, torch_dtype)
    params = jax.tree_util.tree_map(jnp.asarray, convert.torch_to_flax(model.state_dict(), cfg))
    return model, params


def make_inputs(
    cfg: VAEConfig, dtype: str, seed: int = 1, batch: int = BATCH, num_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """x [B, D] and eps [L, B, Z]: the preset's own generated data (rectangles) or grey noise in
    [0, 1], Bernoulli-drawn for binarized presets."""
    rng = np.random.default_rng(seed)
    np_dtype = DTYPES[dtype][0]
    if cfg.dataset == "rectangles":
        x = make_rectangles(batch, seed=seed)[0].astype(np.float64)
    else:
        x = rng.uniform(size=(batch, cfg.input_dim))
    if cfg.binarization != "none":
        x = (rng.uniform(size=x.shape) < x).astype(np.float64)
    L = cfg.num_samples if num_samples is None else num_samples
    eps = rng.standard_normal((L, batch, cfg.latent_dim))
    return x.astype(np_dtype), eps.astype(np_dtype)


def _flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """{'encoder.hidden_0.kernel': array, ...} in Flax layout (BatchNorm weights: 'params.encoder...'
    and 'batch_stats.encoder.norm_0.mean')."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out |= _flat(value, name) if isinstance(value, dict) else {name: np.asarray(value)}
    return out


def _jax_forward(cfg: VAEConfig, weights: dict, x: jax.Array, eps: jax.Array, api: str) -> tuple[Any, ...]:
    """(outputs, mean, scale, (loss, aux), grads as the Linen tree) of the JAX half, in training mode
    (BatchNorm: batch statistics): Linen's apply and step.value_and_grad, or the NNX module and the
    gradient its idiomatic step takes (step.value_and_grad of nnx_models.params_loss)."""
    params, stats = split_weights(weights, cfg)
    if api == "linen":
        model = JaxVAE(cfg)
        if stats is None:
            out = typing.cast(Any, model.apply({"params": params}, x, eps))
        else:
            out = typing.cast(Any, model.apply(weights, x, eps, train=True, mutable=["batch_stats"]))[0]
        loss = functools.partial(jax_loss_fn, batch_stats=stats)
        vg = jax.jit(lambda p, x, e, beta: js.value_and_grad(p, x, e, cfg, beta, apply_loss=loss))
        return (*out, *vg(params, x, eps, cfg.beta))
    nnx_model = nnx_models.from_linen_params(cfg, params, stats)
    graphdef, param_state, stat_state = typing.cast(tuple, nnx.split(nnx_model, nnx.Param, nnx.BatchStat))
    nnx_loss = nnx_models.params_loss(graphdef)
    if stats is not None:
        nnx_loss = functools.partial(nnx_loss, batch_stats=stat_state)
    vg_fn = jax.jit(lambda s, x, e, beta: js.value_and_grad(s, x, e, cfg, beta, apply_loss=nnx_loss))
    loss_aux, grads = vg_fn(param_state, x, eps, cfg.beta)  # beta traced, as in the Linen half
    return (*nnx_model(x, eps, True), loss_aux, nnx.to_pure_dict(grads))


@functools.cache  # configs are frozen (hashable); tests share runs
def forward_pair(cfg: VAEConfig, dtype: str, api: str = "linen") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (jax, torch) for encoder outputs, decoder outputs, each loss term and every gradient;
    `api`: the JAX half's model API (APIS)."""
    model, params = setup_pair(cfg, dtype)
    x, eps = make_inputs(cfg, dtype)
    # --- JAX half
    xj, epsj = jnp.asarray(x), jnp.asarray(eps)
    outj, meanj, scalej, (lossj, auxj), gradsj = _jax_forward(cfg, params, xj, epsj, api)
    # --- torch half
    xt, epst = torch.from_numpy(x), torch.from_numpy(eps)
    outt, meant, scalet = model(xt, epst)
    (losst, auxt), gradst = ts.value_and_grad(model, xt, epst, cfg, cfg.beta)
    gradst = _torch_grads_to_flax(gradst, model, cfg)
    pairs = {
        "encoder.mean": (meanj, meant),
        "encoder.scale": (scalej, scalet),
        "decoder.outputs": (outj, outt),
        "loss": (lossj, losst),
    }
    pairs.update({f"loss.{k}": (auxj[k], auxt[k]) for k in ("recon", "kl", "per_example")})
    gj, gt = _flat(gradsj), _flat(gradst)
    pairs.update({f"grad.{k}": (gj[k], gt[k]) for k in gt})
    return {
        k: (np.asarray(a), b.detach().numpy() if hasattr(b, "detach") else np.asarray(b))
        for k, (a, b) in pairs.items()
    }


def _torch_grads_to_flax(grads: dict, model: TorchVAE, cfg: VAEConfig) -> dict:
    """torch parameter gradients -> the Flax params layout (BatchNorm buffers have no gradient: the
    converter is given the model's own buffers beside them and only the params are kept)."""
    if not cfg.batch_norm:
        return convert.torch_to_flax(grads, cfg)
    buffers = {k: v for k, v in model.state_dict().items() if k not in grads}
    return convert.torch_to_flax({**grads, **buffers}, cfg)["params"]


def trajectory_batches(
    cfg: VAEConfig, dtype: str, num_batches: int = 4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fixed (x, eps) batches trajectories cycle through (seeds 100, 101, ...)."""
    return [make_inputs(cfg, dtype, seed=100 + i) for i in range(num_batches)]


def jax_trajectory(
    cfg: VAEConfig, params: dict, batches: list[tuple[np.ndarray, np.ndarray]], steps: int, api: str
) -> tuple[list[float], dict]:
    """(batch loss per step, final params as the Linen tree) of `steps` injected-eps updates: Linen's
    step.update ("linen"), the NNX idiomatic step ("nnx": nnx.Optimizer, model and optimizer updated
    in place) or the NNX functional step ("nnx-functional": split once, nnx.merge inside the jit)."""
    tx = jo.make_optimizer(cfg, steps_per_epoch=STEPS_PER_EPOCH)
    losses = []
    params, stats = split_weights(params, cfg)  # the weights: params, and BatchNorm running statistics
    if api in ("linen", "nnx-functional"):
        state = js.create_state(params, tx, stats)
        update = jax.jit(lambda s, x, e: js.update(s, x, e, cfg, tx))
        if api == "nnx-functional":
            graphdef, state = nnx_step.split(nnx_models.from_linen_params(cfg, params, stats), tx)
            update = jax.jit(lambda s, x, e: nnx_step.functional_update(graphdef, s, x, e, cfg, tx))
        for i in range(steps):
            x, eps = batches[i % len(batches)]
            state, metrics = update(state, jnp.asarray(x), jnp.asarray(eps))
            losses.append(float(metrics.batch_loss))
        return losses, jax.device_get(weights(state.params, state.batch_stats, cfg))
    model = nnx_models.from_linen_params(cfg, params, stats)
    optimizer = nnx_step.create_optimizer(model, tx)
    nnx_update = nnx.jit(nnx_step.update, static_argnames=("cfg", "shards"))
    for i in range(steps):
        x, eps = batches[i % len(batches)]
        metrics = nnx_update(model, optimizer, jnp.asarray(x), jnp.asarray(eps), cfg)
        losses.append(float(metrics.batch_loss))
    final = weights(nnx_models.to_linen_params(model), nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), cfg)
    return losses, jax.device_get(final)


@functools.cache  # configs are frozen (hashable); tests share runs
def trajectory_pair(
    cfg: VAEConfig, dtype: str, steps: int = 100, num_batches: int = 4, api: str = "linen"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`steps` optimizer steps on fixed batches with fixed eps, both sides from the same weights;
    `api`: the JAX half's model API (APIS).

    Returns 'losses' [steps] and every final parameter 'param.<name>' as (jax, torch).
    """
    _, params = setup_pair(cfg, dtype)
    batches = trajectory_batches(cfg, dtype, num_batches)
    # --- JAX half
    losses_j, params_j = jax_trajectory(cfg, params, batches, steps, api)
    # --- torch half (one run per config, shared by the Linen and NNX cases)
    losses_t, pt = torch_trajectory(cfg, dtype, steps, num_batches)
    pj = _flat(params_j)
    out = {"losses": (np.array(losses_j), losses_t)}
    out.update({f"param.{k}": (pj[k], pt[k]) for k in pt})
    return out


@functools.cache
def torch_trajectory(
    cfg: VAEConfig, dtype: str, steps: int, num_batches: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The torch half of trajectory_pair: (losses [steps], final params in the Flax layout), with the
    reference optimizer implementation pinned (no foreach, no fused kernels)."""
    model, _ = setup_pair(cfg, dtype)
    batches = trajectory_batches(cfg, dtype, num_batches)
    ttx = to.make_optimizer(cfg, steps_per_epoch=STEPS_PER_EPOCH, foreach=False, fused=False)
    tstate = ts.create_state(model, ttx)
    losses_t = []
    for i in range(steps):
        x, eps = batches[i % num_batches]
        tstate, metrics = ts.update(tstate, torch.from_numpy(x), torch.from_numpy(eps), cfg)
        losses_t.append(float(metrics.batch_loss))
    return np.array(losses_t), _flat(convert.torch_to_flax(tstate.model.state_dict(), cfg))


def variant(cfg: VAEConfig, **changes) -> VAEConfig:
    """dataclasses.replace, renamed so tests read as 'a variant of the preset'."""
    return dataclasses.replace(cfg, **changes)


@functools.cache  # configs are frozen (hashable); tests share runs
def torch_self_divergence(
    cfg: VAEConfig, dtype: str, steps: int = 100, rel: float | None = None, num_batches: int = 4
) -> np.ndarray:
    """Per-step relative loss gap between two torch runs whose initial weights differ by `rel`
    (default: one unit of roundoff): the objective's own sensitivity, the envelope parity must meet."""
    rel = rel if rel is not None else float(np.finfo(DTYPES[dtype][0]).eps)
    batches = [make_inputs(cfg, dtype, seed=100 + i) for i in range(num_batches)]
    runs = []
    for perturb in (0.0, rel):
        model, _ = setup_pair(cfg, dtype)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0 + perturb)
        ttx = to.make_optimizer(cfg, steps_per_epoch=STEPS_PER_EPOCH, foreach=False, fused=False)
        state, losses = ts.create_state(model, ttx), []
        for i in range(steps):
            x, eps = batches[i % num_batches]
            state, metrics = ts.update(state, torch.from_numpy(x), torch.from_numpy(eps), cfg)
            losses.append(float(metrics.batch_loss))
        runs.append(np.array(losses))
    return np.abs(runs[1] - runs[0]) / np.abs(runs[0])
