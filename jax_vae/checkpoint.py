"""Orbax checkpoints of a JAX run (mirror of torch_reference/checkpoint.py).

A checkpoint of step k holds the TrainState (params, optimizer state, step), the data order of the
epoch in progress, the RNG state (the eps key; every step's key is fold_in(key, step)) and a JSON
`meta` (preset, config, epoch position, running epoch sums).
Orbax writes each step into `<k>.orbax-checkpoint-tmp-*` and renames it when complete, so a crash
mid-save leaves the previous checkpoint as the latest one; the last KEEP checkpoints are kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jax_vae.common.errors import RunError
from jax_vae.step import TrainState

KEEP = 3
logging.getLogger("absl").setLevel(logging.ERROR)  # orbax info/warnings are noise here


class Checkpoints:
    """The checkpoints folder of one run: save(step, ...), latest_step(), restore(...)."""

    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        self.directory = Path(directory).absolute()
        self.keep = keep
        self._manager: ocp.CheckpointManager | None = None
        self._manager_read_only = True

    def _mngr(self, write: bool) -> ocp.CheckpointManager | None:
        if self._manager is None or (write and self._manager_read_only):
            if not write and not self.directory.is_dir():
                return None
            self.close()
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.keep,
                enable_async_checkpointing=False,
                create=write,
                cleanup_tmp_directories=write,
                read_only=not write,
            )
            self._manager, self._manager_read_only = (
                ocp.CheckpointManager(self.directory, options=options),
                not write,
            )
        return self._manager

    def _writer(self) -> ocp.CheckpointManager:
        mngr = self._mngr(write=True)
        assert mngr is not None
        return mngr

    def _reader(self) -> ocp.CheckpointManager:
        """The manager of an existing checkpoints folder (callers have found a step in it)."""
        mngr = self._mngr(write=False)
        if mngr is None:
            raise RunError(f"no checkpoint folder {self.directory}")
        return mngr

    def all_steps(self) -> list[int]:
        mngr = self._mngr(write=False)
        if mngr is None:
            return []
        mngr.reload()  # another process (or a killed one) may have changed the folder
        return sorted(mngr.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(
        self, step: int, state: TrainState, order: np.ndarray, rng: jax.Array, meta: dict[str, Any]
    ) -> None:
        """Write checkpoint `step` synchronously (it is complete on return)."""
        tree = {"state": state, "order": np.asarray(order, np.int32), "rng": rng}
        self._writer().save(
            step, args=ocp.args.Composite(train=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        )

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise RunError(f"no checkpoint in {self.directory}")
        return self._reader().restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def restore(
        self, template: TrainState, n: int, rng: jax.Array, step: int | None = None
    ) -> tuple[TrainState, np.ndarray, jax.Array, dict[str, Any]]:
        """(a new state laid out like `template`, data order int32 [n], rng like `rng`, meta) of
        checkpoint `step` (default: the latest)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise RunError(f"no checkpoint in {self.directory}")
        abstract = {
            "state": jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template),
            "order": jax.ShapeDtypeStruct((n,), np.int32),
            "rng": ocp.utils.to_shape_dtype_struct(rng),
        }
        try:
            got = self._reader().restore(
                step,
                args=ocp.args.Composite(
                    train=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise RunError(
                f"checkpoint {step} in {self.directory} does not fit this run "
                f"({' '.join(str(err).split())[:200]})"
            ) from None
        return got.train["state"], np.asarray(got.train["order"]), got.train["rng"], got.meta

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def load_params(path: Path, step: int | None = None) -> tuple[dict, dict[str, Any]]:
    """(params as numpy, meta with 'config') from a run folder, its checkpoints/ or a params export."""
    path = Path(path).absolute()
    if (path / "params").is_dir() and (path / "meta").is_dir():  # a params export
        got = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
            path, args=ocp.args.Composite(params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        )
        return jax.tree_util.tree_map(np.asarray, got.params), got.meta
    ckpts = Checkpoints(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
    step = ckpts.latest_step() if step is None else step
    if step is None:
        raise RunError(f"no JAX checkpoint found in {path}")
    if step not in ckpts.all_steps():
        raise RunError(f"no checkpoint of step {step} in {ckpts.directory} (have {ckpts.all_steps()})")
    got = ckpts._reader().restore(
        step,
        args=ocp.args.Composite(
            train=ocp.args.StandardRestore(_local_target(ckpts.directory / str(step) / "train")),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return jax.tree_util.tree_map(np.asarray, got.train["state"]["params"]), got.meta


def _local_target(item_dir: Path) -> Any:
    """Abstract tree of a saved item placed on this process's first device, so checkpoints written
    on another device topology (data-parallel meshes, other hosts) restore here."""
    metadata = ocp.StandardCheckpointer().metadata(item_dir)
    tree = getattr(metadata, "item_metadata", metadata)  # orbax >= 0.11 wraps it in StepMetadata
    tree = getattr(tree, "tree", tree)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree)


def save_params(path: Path, params: dict, meta: dict[str, Any]) -> None:
    """A params-only checkpoint (no optimizer state) at `path`, e.g. converted from PyTorch; orbax
    writes it under a temp name and renames it when complete."""
    path = Path(path).absolute()
    if path.exists():
        raise RunError(f"{path} already exists; choose another output path")
    ocp.Checkpointer(ocp.CompositeCheckpointHandler()).save(
        path, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta))
    )
