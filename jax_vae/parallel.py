"""Data-parallel training over every device (all hosts under jax.distributed) with jax.sharding.

The train step is step.train_step, jitted with shardings: the batch axis is
split over the mesh axis "data", parameters and optimizer state are replicated. The loss is the
same reduction over the GLOBAL batch as on one device (XLA inserts the all-reduce of the gradient
sums), so a sharded run follows the single-device run up to float summation order.

Multi-host: every process runs the same program on the same global batch order (same seed); each
one hands only its own devices' rows to the mesh (`shard_batch`), and `initialize_distributed`
connects the processes first. Launch commands are in docs/data-parallel.md.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.metrics import StepMetrics
from jax_vae.losses import loss_fn
from jax_vae.step import LossFn, TrainState, train_step

Array = jax.Array
DATA_AXIS = "data"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # host:port of process 0 (read by jax itself too)
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> bool:
    """jax.distributed.initialize from the arguments, else $JAX_COORDINATOR_ADDRESS,
    $JAX_NUM_PROCESSES, $JAX_PROCESS_ID; auto=True (or coordinator 'auto') lets JAX detect the
    SLURM / Open MPI / TPU cluster it runs in.

    Returns True when the distributed runtime was started. Call before any other JAX work.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    if coordinator_address == "auto":
        auto, coordinator_address = True, None
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = int(os.environ[ENV_NUM_PROCESSES])
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = int(os.environ[ENV_PROCESS_ID])
    given = (coordinator_address, num_processes, process_id)
    if not auto and all(v is None for v in given):
        return False
    if not auto and any(v is None for v in given):
        raise ValueError(
            "multi-process training needs the coordinator address, the number of processes "
            f"and this process's id; got coordinator={coordinator_address!r}, "
            f"num_processes={num_processes!r}, process_id={process_id!r} (set --coordinator/"
            f"{ENV_COORDINATOR}, --num-processes/{ENV_NUM_PROCESSES}, --process-id/{ENV_PROCESS_ID})"
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh with axis 'data' over `devices` (default: jax.devices(), every host's devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, micro_batch: int = 0) -> None:
    """The global batch (and each gradient-accumulation chunk) must split evenly over the devices."""
    for name, size in (("batch size", batch_size), ("micro_batch", micro_batch)):
        if size % mesh.size:
            flag = "--batch-size " if name == "batch size" else "--set micro_batch="
            raise ValueError(
                f"{name} {size} does not split over {mesh.size} devices; use a multiple "
                f"of {mesh.size} (e.g. {flag}{mesh.size * -(-size // mesh.size)})"
            )


def _global_array(value: Any, sharding: NamedSharding) -> Array:
    """A global jax.Array from a host value every process holds in full; each takes its own rows."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree (params, TrainState, a key) on every device of the mesh."""
    sharding = replicated(mesh)

    def leaf_to_mesh(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
        return _global_array(_leaf_to_host(leaf), sharding)

    return jax.tree_util.tree_map(leaf_to_mesh, tree)


def shard_batch(batch: np.ndarray, mesh: Mesh) -> Array:
    """Global batch [B, D] (the same on every process) -> jax.Array split on 'data'."""
    check_batch_size(batch.shape[0], mesh)
    return _global_array(batch, batch_sharded(mesh))


def _leaf_to_host(leaf: Any) -> np.ndarray:
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
        return np.asarray(jax.device_get(leaf))
    if leaf.is_fully_replicated:
        return np.asarray(leaf.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def to_host(tree: Any) -> Any:
    """numpy copy of a pytree of replicated (or fully addressable) arrays, on every process."""
    return jax.tree_util.tree_map(_leaf_to_host, tree)


def make_parallel_train_step(
    cfg: VAEConfig, tx: optax.GradientTransformation, mesh: Mesh, apply_loss: LossFn = loss_fn
) -> Callable[[TrainState, Array, Array], tuple[TrainState, StepMetrics]]:
    """step.train_step(state, batch, key) jitted over the mesh: state and key replicated, batch
    [B, D] sharded on 'data', state donated; metrics come back replicated. apply_loss: the loss
    differentiated (losses.loss_fn, Linen; nnx_models.params_loss(graphdef), the NNX model)."""
    check_batch_size(cfg.batch_size, mesh, cfg.micro_batch)
    repl, data = replicated(mesh), batch_sharded(mesh)
    step = functools.partial(train_step, cfg=cfg, tx=tx, shards=mesh.size, apply_loss=apply_loss)
    return jax.jit(step, in_shardings=(repl, data, repl), out_shardings=(repl, repl), donate_argnums=0)
