"""torch.save checkpoints of a PyTorch run (mirror of jax_vae/checkpoint.py).

A checkpoint of step k (`ckpt_<k>.pt`) holds the model, optimizer and scheduler state dicts, the
data order of the epoch in progress, the RNG state (the eps generator's state) and a JSON-able `meta`
(preset, config, epoch position, running epoch sums). Each file is written atomically
(jax_vae.common.files), so a crash mid-save leaves the previous checkpoint as the latest one; the last
KEEP checkpoints are kept. Files load with torch.load(weights_only=True).
A params export (`save_params`) is a state_dict file plus `<file>.json` holding its meta.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jax_vae.common.errors import RunError, one_line
from jax_vae.common.files import atomic_write, atomic_write_text
from jax_vae.common.runs.checkpoint_steps import Steps
from jax_vae.common.runs.checkpoint_steps import cause as os_cause
from torch_reference.step import TrainState

KEEP = 3
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
_UNFINISHED = re.compile(r"^\.ckpt_(\d+)\.pt\..*\.tmp$")  # files.atomic_write's temp file
_KEYS = ("model", "optimizer", "scheduler", "step", "order", "rng", "meta")


class Checkpoints:
    """The checkpoints folder of one run: save(step, ...), latest_step(), restore(...)."""

    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        self.directory = Path(directory).absolute()
        self.keep = keep
        self._steps = Steps(self.directory, self._check)
        self._payload: tuple[int, tuple[int, int], dict[str, Any]] | None = None  # the last one read

    def _path(self, step: int) -> Path:
        return self.directory / f"ckpt_{step:09d}.pt"

    def all_steps(self) -> list[int]:
        """Every checkpoint file's step, intact or not."""
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for f in os.listdir(self.directory) if (m := _NAME.match(f)))

    def unfinished_steps(self) -> list[int]:
        """Steps whose save never finished (atomic_write's temp files, which are never read)."""
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

    def save(
        self, step: int, state: TrainState, order: np.ndarray, rng: torch.Tensor, meta: dict[str, Any]
    ) -> None:
        """Write checkpoint `step` atomically, then drop all but the last KEEP. Checkpoints of later
        steps, left by the run this one resumed before, are deleted first."""
        payload = {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
            "step": step,
            "order": torch.from_numpy(np.asarray(order, np.int32).copy()),
            "rng": rng.clone(),
            "meta": meta,
        }
        if self._path(step).is_dir():
            raise RunError(f"{self._path(step)} is a folder; move it away to save checkpoint step {step}")
        for stale in [s for s in self.all_steps() if s > step]:
            self._path(stale).unlink(missing_ok=True)
        atomic_write(self._path(step), lambda f: torch.save(payload, f))
        self._steps.set(step, None)
        for old in self.all_steps()[: -self.keep]:
            self._path(old).unlink(missing_ok=True)

    def _check(self, step: int) -> str | None:
        """Read checkpoint `step` whole (kept for the restore that follows); why it is broken, or None."""
        self._payload = None
        path = self._path(step)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - whatever torch raises, the file is unreadable
            return (
                "unreadable (it holds objects other than tensors)"
                if _refused(err)
                else f"unreadable ({cause(err)})"
            )
        missing = [k for k in _KEYS if not isinstance(payload, dict) or k not in payload]
        if missing:
            return f"incomplete (no {missing[0]})"
        self._payload = (step, _stamp(path), payload)
        return None

    def _load(self, step: int | None) -> dict[str, Any]:
        """The payload of checkpoint `step` (default: the newest intact one), read once."""
        while True:
            chosen = self.pick(step)
            if self._payload is None or self._payload[:2] != (chosen, _stamp(self._path(chosen))):
                self._steps.set(chosen, self._check(chosen))  # read after another step's check
            if self._payload is not None and self._payload[0] == chosen:
                return self._payload[2]
            # it broke since it was checked: pick again (a note, or the error for a requested step)

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The meta of checkpoint `step` (default: the newest intact one)."""
        return self._load(step)["meta"]

    def restore(
        self, template: TrainState, n: int, rng: torch.Tensor, step: int | None = None
    ) -> tuple[TrainState, np.ndarray, torch.Tensor, dict[str, Any]]:
        """(`template` with model/optimizer/scheduler loaded in place, as torch state is mutable
        modules; data order int32 [n]; rng state; meta) of checkpoint `step` (default: the newest
        intact one)."""
        payload = self._load(step)
        try:
            template.model.load_state_dict(payload["model"])
            template.optimizer.load_state_dict(payload["optimizer"])
            if template.scheduler is not None:
                template.scheduler.load_state_dict(payload["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise RunError(
                f"checkpoint {payload.get('step')} in {self.directory} does not fit this run "
                f"({one_line(err, 200)})"
            ) from None
        order = payload["order"].numpy()
        if order.shape != (n,) or payload["rng"].shape != rng.shape:
            raise RunError(
                f"checkpoint {payload['step']} in {self.directory} is of a dataset of "
                f"{order.shape[0]} examples, not {n}"
            )
        template.step = int(payload["step"])
        return template, order, payload["rng"], payload["meta"]

    def close(self) -> None:
        self._payload = None


def _stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns) of a file, to tell a re-written checkpoint from the one read before."""
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def cause(err: BaseException) -> str:
    """A few words on why torch.load could not read a checkpoint file."""
    text = str(err)
    if (isinstance(err, OSError) and err.errno == errno.EINVAL) or "central directory" in text:
        return "truncated file"  # torch.load of a cut zip: EINVAL, or no central directory
    if "not a ZIP archive" in text:
        return "not a PyTorch zip file"
    if m := re.search(r"failed locating file (\S+)", text):
        return f"missing {m.group(1).rstrip(':')} in the zip"
    return os_cause(err)


def _refused(err: BaseException) -> bool:
    """Whether torch.load(weights_only=True) refused a pickle of objects other than tensors."""
    return isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower()


def torch_load(path: Path) -> Any:
    """torch.load(weights_only=True) to the CPU; any failure is one RunError line naming `path` (a
    refused pickle without torch's advice to load it unsafely)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one user-facing line
        if _refused(err):
            raise RunError(f"{path} holds objects other than tensors and is not loaded") from None
        raise RunError(f"cannot read {path} as a PyTorch file ({cause(err)})") from None


def load_params(path: Path, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state_dict, meta) from a run folder, its checkpoints/, a checkpoint file, or a
    state_dict file such as an export (its meta read from <file>.json when present, else {});
    `step`, if given, must be a file's own."""
    path = Path(path).absolute()
    if path.is_file():
        state, meta = _load_file(path)
        if step is not None and meta.get("step") != step:
            raise RunError(f"{path} holds step {meta.get('step')}, not step {step}")
        return state, meta
    ckpts = Checkpoints(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
    if not ckpts.all_steps() and not ckpts.unfinished_steps():
        raise RunError(f"no PyTorch checkpoint found in {path}")
    payload = ckpts._load(step)
    return payload["model"], payload["meta"]


def _load_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) of a run's checkpoint file or of a state_dict file and its <file>.json."""
    payload = torch_load(path)
    if isinstance(payload, dict) and "model" in payload and "meta" in payload:  # a run's checkpoint
        return payload["model"], payload["meta"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise RunError(f"{path} holds a {type(payload).__name__} that is not a state_dict of tensors")
    sidecar = Path(f"{path}.json")
    if not sidecar.is_file():
        return payload, {}
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as err:
        raise RunError(f"cannot read {sidecar} as JSON ({one_line(err, 120)})") from None
    if not isinstance(meta, dict):
        raise RunError(f"{sidecar} holds no JSON object")
    return payload, meta


def save_params(path: Path, params: dict[str, Any], meta: dict[str, Any]) -> None:
    """A state_dict file at `path` (load it with VAE(cfg).load_state_dict(torch.load(path))) and its
    meta in <path>.json, each written atomically; an existing `path` is never overwritten."""
    path = Path(path).absolute()
    if path.exists() or Path(f"{path}.json").exists():
        raise RunError(f"{path} already exists; choose another output path")
    state = {k: torch.from_numpy(np.array(v)) for k, v in params.items()}  # a writable copy
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write_text(Path(f"{path}.json"), json.dumps(meta, indent=2) + "\n")
