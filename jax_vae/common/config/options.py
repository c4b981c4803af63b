"""The run options: how a run executes, not what it learns (that is VAEConfig).

`TrainOptions` is the one declaration; the CLI's train flags are built from its fields
(jax_vae.common.cli) and config.json records the persisted ones, which a resumed run restores.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable
from typing import Any, Literal, SupportsInt, TypeVar

from jax_vae.common.errors import RunError

JitMode = Literal["scan", "step"]
Api = Literal["linen", "nnx"]
Tick = Callable[[SupportsInt], None]  # called with the step reached (an int, or a 0-d array)
# The weight layouts --source accepts: jax-vae's own, then each source's key map
# (jax_vae.common.weights.sources.SOURCES, in its order).
SOURCE_NAMES = ("jax-vae", "pytorch-examples", "minimalist", "deep-mse", "day37", "wiseodd", "flax-examples")


_T = TypeVar("_T")  # the type of an option's field


def option(default: _T, help: str, *, persist: bool = True, off: str = "") -> _T:
    """A TrainOptions field: its help, whether a resumed run restores it from config.json, and for a
    bool that defaults to True the help of its --no-<name> flag."""
    return dataclasses.field(default=default, metadata={"help": help, "persist": persist, "off": off})


def _type_ok(value: object, hint: Any) -> bool:  # hint: a type or a typing form
    """Whether `value` is of the type hint (Literal values, bool apart from int, X | None)."""
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_args(hint):  # a union such as str | None
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    return isinstance(value, hint)


def thread_count(threads: str, framework: str, cpus: int | None = None) -> int:
    """CPU threads of a `framework` run: N for "N" (at most the CPUs this process may use); "auto": 1 for
    torch, whose OpenMP threads spin-wait and collapse beside other busy processes, every CPU for JAX
    (measured: docs/benchmarks.md#cpu-threads)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads == "auto":
        return 1 if framework == "torch" else cpus
    if not threads.isdigit() or int(threads) < 1:
        raise RunError(f"threads must be auto or an integer N >= 1, got {threads!r}")
    return min(int(threads), cpus)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How a run executes (not what it learns): the one declaration of the run options; the CLI's
    train flags are built from these fields (jax_vae.common.cli)."""

    device: str = option("auto", "auto (default), cpu, gpu or cuda")
    threads: str = option(
        "auto",
        "CPU threads: N >= 1 or auto (default): PyTorch 1 (2 spin-waiting OpenMP threads ran ~20x "
        "slower on a busy 2-core CPU; with N > 1 on a shared CPU set OMP_WAIT_POLICY=PASSIVE), "
        "JAX every CPU (docs/benchmarks.md#cpu-threads). JAX takes it only at CLI start, before jax "
        "is imported: XLA sizes its CPU pool from the CPUs the process may use, so N keeps the first N",
    )
    jit: JitMode = option(
        "scan",
        "JAX: one lax.scan per chunk of steps (default) or one jit call per "
        "step; PyTorch runs eagerly either way",
    )
    api: Api = option(
        "linen",
        "JAX: the Flax API of the model, linen (default) or nnx (the NNX modules, trained as split "
        "state + jax.jit); the same params tree, checkpoints and numbers, so --resume may switch it; "
        "PyTorch has one model API and refuses nnx",
    )
    checkpoint_every: int = option(0, "also checkpoint every N steps (default: epoch ends)")
    log_every: int = option(10, "write a step record every N steps (default 10)")
    chunk_steps: int = option(0, "at most N steps per jitted scan (default: an epoch)")
    data_parallel: bool = option(
        False,
        "JAX: split each batch over every device (all processes with "
        "--coordinator); parameters replicated; the batch size must be a "
        "multiple of the device count",
    )
    tensorboard: bool = option(
        False,
        "also write TensorBoard event files (tensorboardX) into the run folder: every scalar of "
        "metrics.jsonl and, unless --no-images, the image grids per epoch (docs/training.md#tensorboard); "
        "a resumed run keeps it on",
    )
    resume: bool = option(False, "continue the run in --out from its last checkpoint", persist=False)
    resume_step: int | None = option(
        None,
        "with --resume: continue from this checkpoint step (default: the newest intact one)",
        persist=False,
    )
    init_from: str | None = option(
        None,
        "start a new run from these weights instead of the preset's init (fine-tuning, a fresh optimizer): "
        "a jax-vae export (.safetensors, .pt) or run folder, or with --source a source's own checkpoint; "
        "without --preset, the file's preset (or the source's), its layer widths read from the file",
    )
    source: str = option(
        "jax-vae",
        "the layout of --init-from (and of evaluate --weights): jax-vae (default: jax-vae's own files) "
        f"or a source's own: {', '.join(SOURCE_NAMES[1:])} (docs/weights.md)",
    )
    data_dir: str | None = option(
        None, "folder with the IDX files ($JAX_VAE_DATA_DIR or ~/.cache/jax_vae/datasets)", persist=False
    )
    download: bool = option(
        True, "download missing data", persist=False, off="fail instead of downloading missing data"
    )
    progress: bool = option(
        True,
        "a progress bar on a terminal",
        persist=False,
        off="no progress bar (also off when not a terminal)",
    )
    images: bool = option(True, "write the images and plots", persist=False, off="skip the images and plots")
    verbose: bool = option(
        False,
        "print each step record (every --log-every steps) as one line on stderr; with --jit scan "
        "(the default), as in every mode, a chunk's lines come when the chunk ends (an epoch by "
        "default; --chunk-steps N for sooner)",
        persist=False,
    )

    def check(self) -> None:
        """Types (a tampered config.json's options too) and ranges, as one-line RunErrors."""
        hints = typing.get_type_hints(TrainOptions)
        for f in dataclasses.fields(self):
            hint = hints[f.name]
            if not _type_ok(getattr(self, f.name), hint):
                kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
                raise RunError(f"run option {f.name} expects {kind}, got {getattr(self, f.name)!r}")
        if self.resume_step is not None and (not self.resume or self.resume_step < 0):
            raise RunError(f"--resume-step needs --resume and a step >= 0, got {self.resume_step}")
        thread_count(self.threads, "torch")  # validates "auto" or N >= 1
        if self.source not in SOURCE_NAMES:
            raise RunError(f"unknown source {self.source!r}; source layouts: {', '.join(SOURCE_NAMES)}")
        if self.jit not in typing.get_args(JitMode):
            raise RunError(f"unknown jit mode {self.jit!r}; valid: {', '.join(typing.get_args(JitMode))}")
        for name in ("checkpoint_every", "chunk_steps"):
            if getattr(self, name) < 0:
                raise RunError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise RunError(f"log-every must be >= 1, got {self.log_every}")

    def persisted(self) -> dict[str, Any]:
        """The options config.json records and a resumed run restores."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["persist"]}


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How `evaluate` scores a checkpoint (the CLI's evaluate flags)."""

    k: int = 5000
    step: int | None = None
    batch_size: int = 100
    chunk: int | None = None
    seed: int = 0
    num_images: int | None = None
    data_dir: str | None = None
    download: bool = True
    out: str | None = None
    device: str = "auto"
    threads: str = "auto"  # options.thread_count: N >= 1 or auto
    source: str | None = (
        None  # set: `source` is a weight file in this layout (jax_vae.common.weights.sources)
    )
    preset: str | None = None  # with source: the preset to score it as (default: the file's or source's)
    dataset: str | None = None  # score on this dataset instead of the preset's (same image size)
