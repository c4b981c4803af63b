"""Orbax checkpoints of a JAX run (mirror of torch_reference/checkpoint.py).

A checkpoint of step k holds the TrainState (params, optimizer state, step, a BatchNorm model's
running statistics), the data order of the
epoch in progress, the RNG state (the eps key; every step's key is fold_in(key, step)) and a JSON
`meta` (preset, config, epoch position, running epoch sums).
Orbax writes each step into `<k>.orbax-checkpoint-tmp-*` and renames it when complete, so a crash
mid-save leaves the previous checkpoint as the latest one; the last KEEP checkpoints are kept.
A step is read only once it checks intact (`problem`: its commit marker, both metadata files, and
every value of its OCDBT store read back synchronously through tensorstore, so orbax never meets a
broken file); by default the newest intact step is read, with a note for each newer broken one
(jax_vae.common.runs.checkpoint_steps).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import re
import shutil
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from jax_vae.common.errors import RunError, one_line
from jax_vae.common.files import with_path
from jax_vae.common.runs.checkpoint_steps import Steps
from jax_vae.common.runs.checkpoint_steps import cause as os_cause
from jax_vae.step import TrainState

KEEP = 3
COMMIT_MARKER = "commit_success.txt"  # orbax writes it into a step folder as the save's last file
_UNFINISHED = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")


def _late_orbax_error(err: BaseException | None, tb: Any) -> bool:
    """Whether an error is one orbax's writer threads leave after a failed save was undone (_write):
    raised in orbax's code with nobody to retrieve it, or a callback into its closed event loop."""
    if err is None:
        return False
    frames = traceback.extract_tb(tb) if tb is not None else []
    from_orbax = any(f"{os.sep}orbax{os.sep}" in frame.filename for frame in frames)
    return from_orbax or "Event loop is closed" in str(err)


def _late_orbax_report(record: logging.LogRecord) -> bool:
    """Logging filter: drop asyncio's / concurrent.futures' reports of those errors."""
    return not (record.exc_info and _late_orbax_error(record.exc_info[1], record.exc_info[2]))


def _unraisable(args: Any, default: Callable[[Any], None]) -> None:
    """sys.unraisablehook: drop those errors when their futures are collected; report the rest."""
    if not _late_orbax_error(args.exc_value, args.exc_traceback):
        default(args)


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """While orbax runs (and only then): absl's info and warnings held back, asyncio's and
    concurrent.futures' reports of the errors its writer threads leave after a failed save dropped,
    and Python's 'Exception ignored' for them; the process's logging and hooks restored after.
    Re-entrant; a decorator too."""
    absl, hook = logging.getLogger("absl"), sys.unraisablehook
    reporters = [logging.getLogger(n) for n in ("asyncio", "concurrent.futures")]
    added = [r for r in reporters if _late_orbax_report not in r.filters]  # an outer call's stay
    level = absl.level
    absl.setLevel(logging.ERROR)
    for logger in added:
        logger.addFilter(_late_orbax_report)
    sys.unraisablehook = functools.partial(_unraisable, default=hook)
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for logger in added:
            logger.removeFilter(_late_orbax_report)
        absl.setLevel(level)


T = TypeVar("T")


class Checkpoints:
    """The checkpoints folder of one run: save(step, ...), latest_step(), restore(...)."""

    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        self.directory = Path(directory).absolute()
        self.keep = keep
        self._manager: ocp.CheckpointManager | None = None
        self._manager_read_only = True
        self._steps = Steps(self.directory, lambda step: _folder_problem(self.directory / str(step), "train"))

    @quiet_orbax()
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

    @quiet_orbax()
    def all_steps(self) -> list[int]:
        """Every finished step folder, intact or not."""
        mngr = self._mngr(write=False)
        if mngr is None:
            return []
        mngr.reload()  # another process (or a killed one) may have changed the folder
        return sorted(mngr.all_steps())

    def unfinished_steps(self) -> list[int]:
        """Steps whose save never finished (orbax's temp folders, which orbax never reads)."""
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for f in os.listdir(self.directory) if (m := _UNFINISHED.match(f)))

    def problem(self, step: int) -> str | None:
        """Why checkpoint `step` cannot be read ('unreadable (...)', 'incomplete (...)'), or None."""
        return self._steps.problem(step)

    def latest_step(self) -> int | None:
        """The newest intact step (a note on stderr for each newer broken one), None if none exist."""
        return self._steps.latest(self.all_steps(), self.unfinished_steps())

    def pick(self, step: int | None = None) -> int:
        """`step` if it is intact, else a one-line RunError listing the intact ones; None: the newest."""
        return self._steps.pick(self.all_steps(), step, self.unfinished_steps())

    @quiet_orbax()
    def save(
        self, step: int, state: TrainState, order: np.ndarray, rng: jax.Array, meta: dict[str, Any]
    ) -> None:
        """Write checkpoint `step` synchronously (it is complete on return). Checkpoints of this step
        or later, left by the run this one resumed before, are deleted first (orbax skips a save
        older than its latest step)."""
        mngr = self._writer()
        for stale in [s for s in mngr.all_steps() if s >= step]:
            mngr.delete(stale)
        tree = {"state": _state_tree(state), "order": np.asarray(order, np.int32), "rng": rng}
        args = ocp.args.Composite(train=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        saved = _write(lambda: mngr.save(step, args=args), self.directory / str(step))
        if not saved:
            raise RunError(f"orbax did not save checkpoint step {step} in {self.directory}")
        self._steps.set(step, None)

    @quiet_orbax()
    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The meta of checkpoint `step` (default: the newest intact one)."""
        step = self.pick(step)
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        return self._read(step, lambda: self._reader().restore(step, args=args).meta)

    @quiet_orbax()
    def restore(
        self, template: TrainState, n: int, rng: jax.Array, step: int | None = None
    ) -> tuple[TrainState, np.ndarray, jax.Array, dict[str, Any]]:
        """(a new state laid out like `template`, data order int32 [n], rng like `rng`, meta) of
        checkpoint `step` (default: the newest intact one)."""
        step = self.pick(step)
        abstract = {
            "state": jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _state_tree(template)),
            "order": jax.ShapeDtypeStruct((n,), np.int32),
            "rng": ocp.utils.to_shape_dtype_struct(rng),
        }
        args = ocp.args.Composite(train=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        got = self._read(step, lambda: self._reader().restore(step, args=args), fit=True)
        state = TrainState(**got.train["state"])
        return state, np.asarray(got.train["order"]), got.train["rng"], got.meta

    def _read(self, step: int, read: Callable[[], T], fit: bool = False) -> T:
        """read() of intact checkpoint `step`; what orbax still raises is one RunError line (with
        `fit`, a value error means the checkpoint is of another model or dataset)."""
        try:
            return read_quietly(read)
        except (ValueError, KeyError, TypeError) as err:
            if not fit:
                raise RunError(
                    f"cannot read checkpoint step {step} in {self.directory} ({cause(err)})"
                ) from None
            raise RunError(
                f"checkpoint {step} in {self.directory} does not fit this run ({one_line(err, 200)})"
            ) from None
        except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many kinds; one line
            raise RunError(f"cannot read checkpoint step {step} in {self.directory} ({cause(err)})") from None

    @quiet_orbax()
    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def _state_tree(state: TrainState) -> dict[str, Any]:
    """The TrainState as checkpoints store it: {'step', 'params', 'opt_state'} and, for a BatchNorm
    model only, 'batch_stats' (so checkpoints of models without it keep the layout they always had)."""
    tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
    return tree | ({"batch_stats": state.batch_stats} if state.batch_stats else {})


def cause(err: BaseException) -> str:
    """A few words on why orbax/tensorstore could not read a checkpoint."""
    text = str(err)
    if "OUT_OF_RANGE" in text or "byte range" in text:
        return "truncated data file"
    if "DATA_LOSS" in text:
        return "corrupt data file"
    if "NOT_FOUND" in text:
        return "missing data file"
    return os_cause(err)


@quiet_orbax()
def read_quietly(read: Callable[[], T]) -> T:
    """read(), and when it raises, its abandoned orbax coroutines collected with Python's
    'Exception ignored' reports and asyncio's logs silenced (orbax runs reads on a private event
    loop that it closes with the other reads still pending)."""
    try:
        return read()
    except BaseException:
        _collect_abandoned()
        raise


def _collect_abandoned() -> None:
    """gc.collect() of orbax's abandoned coroutines and futures, their reports silenced."""
    hook, level = sys.unraisablehook, logging.getLogger("asyncio").level
    sys.unraisablehook = lambda _: None
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
        logging.getLogger("asyncio").setLevel(level)


def _write(write: Callable[[], T], target: Path) -> T:
    """write(), an orbax save of `target`, with orbax's thread logs silenced; a failure waits for
    orbax's writer threads, removes the unfinished `<target>.orbax-checkpoint-tmp*` folder and is
    one OSError naming `target` (orbax wraps OS errors, e.g. a full disk, in ValueErrors carrying
    os_error_code) or one RunError."""
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        return write()
    except Exception as err:
        for thread in threading.enumerate():  # orbax's other writers run on after one failed
            if thread is not threading.current_thread() and type(thread).__module__.startswith("orbax"):
                threading.Thread.join(thread, timeout=60)  # orbax's join would re-raise their errors
        _collect_abandoned()
        for tmp in target.parent.glob(f"{target.name}.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise with_path(err, target, always=True) from None
        code = re.search(r"os_error_code='?(\d+)", str(err))
        if code is not None:
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(target)) from None
        raise RunError(f"cannot write checkpoint {target} ({cause(err)})") from None
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _folder_problem(folder: Path, tree_item: str) -> str | None:
    """Why the orbax checkpoint `folder` (items `meta`, JSON, and `tree_item`, a pytree) cannot be
    read, or None: commit marker, metadata files and every stored value, read synchronously."""
    if not (folder / COMMIT_MARKER).is_file():
        return "incomplete (no commit marker)" if folder.is_dir() else "unreadable (not a folder)"
    problem = _json_problem(folder / "meta" / "metadata") or _tree_problem(folder / tree_item)
    return None if problem is None else f"unreadable ({problem})"


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except OSError as err:
        return cause(err)
    except ValueError:
        return f"{path.parent.name}/{path.name} is not JSON"
    return None


def _tree_problem(item: Path) -> str | None:
    """Why the pytree item folder cannot be read: its _METADATA names arrays the store lacks, or a
    value of its (OCDBT) store does not read back."""
    try:
        metadata = json.loads((item / "_METADATA").read_text())
        names = {
            ".".join(str(k["key"]) for k in entry["key_metadata"])
            for entry in metadata["tree_metadata"].values()
            if not entry["value_metadata"].get("skip_deserialize")
        }
    except OSError as err:
        return cause(err)
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{item.name}/_METADATA is not orbax metadata"
    base = {"driver": "file", "path": f"{item}/"}
    spec = {"driver": "ocdbt", "base": base} if metadata.get("use_ocdbt", True) else base
    try:
        store = ts.KvStore.open(spec).result()
        keys = {k.decode() for k in store.list().result()}
        missing = sorted(n for n in names if f"{n}/.zarray" not in keys and f"{n}/zarr.json" not in keys)
        if missing:
            return f"no data for {missing[0]}"
        for key in sorted(keys):
            store.read(key).result()
    except Exception as err:  # noqa: BLE001 - tensorstore raises ValueError and others
        return cause(err)
    return None


@quiet_orbax()
def load_params(path: Path, step: int | None = None) -> tuple[dict, dict[str, Any]]:
    """(params as numpy, meta with 'config') from a run folder, its checkpoints/ or a params export
    (`step`, if given, must be the export's)."""
    path = Path(path).absolute()
    if (path / "params").is_dir() and (path / "meta").is_dir():  # a params export
        problem = _folder_problem(path, "params")
        if problem is not None:
            raise RunError(f"the params export {path} is {problem}")
        args = ocp.args.Composite(params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        try:
            got = read_quietly(
                lambda: ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(path, args=args)
            )
        except Exception as err:  # noqa: BLE001 - one line, whatever orbax raises
            raise RunError(f"cannot read the params export {path} ({cause(err)})") from None
        if step is not None and got.meta.get("step") != step:
            raise RunError(f"{path} is a params export of step {got.meta.get('step')}, not of step {step}")
        return jax.tree_util.tree_map(np.asarray, got.params), got.meta
    ckpts = Checkpoints(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
    if not ckpts.all_steps() and not ckpts.unfinished_steps():
        raise RunError(f"no JAX checkpoint found in {path}")
    step = ckpts.pick(step)
    item = ckpts.directory / str(step) / "train"
    got = ckpts._read(
        step,
        lambda: ckpts._reader().restore(
            step,
            args=ocp.args.Composite(
                train=ocp.args.StandardRestore(local_target(item)), meta=ocp.args.JsonRestore()
            ),
        ),
    )
    state = got.train["state"]
    weights = {k: state[k] for k in ("params", "batch_stats")} if "batch_stats" in state else state["params"]
    return jax.tree_util.tree_map(np.asarray, weights), got.meta  # models.weights


def local_target(item_dir: Path) -> Any:
    """Abstract tree of a saved item placed on this process's first device, so checkpoints written
    on another device topology (data-parallel meshes, other hosts) restore here."""
    metadata = ocp.StandardCheckpointer().metadata(item_dir)
    tree = getattr(metadata, "item_metadata", metadata)  # orbax >= 0.11 wraps it in StepMetadata
    tree = getattr(tree, "tree", tree)
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree)


@quiet_orbax()
def save_params(path: Path, params: dict, meta: dict[str, Any]) -> None:
    """A params-only checkpoint (no optimizer state) at `path`, e.g. converted from PyTorch; orbax
    writes it under a temp name and renames it when complete."""
    path = Path(path).absolute()
    if path.exists():
        raise RunError(f"{path} already exists; choose another output path")
    args = ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta))
    _write(lambda: ocp.Checkpointer(ocp.CompositeCheckpointHandler()).save(path, args=args), path)
