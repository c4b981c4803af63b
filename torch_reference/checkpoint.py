"""torch.save checkpoints of a PyTorch run (mirror of jax_vae/checkpoint.py).

A checkpoint of step k (`ckpt_<k>.pt`) holds the model, optimizer and scheduler state dicts, the
data order of the epoch in progress, the RNG state (the eps generator's state) and a JSON-able `meta`
(preset, config, epoch position, running epoch sums). Each file is written to a temp file, fsynced and
renamed into place, so a crash mid-save leaves the previous checkpoint as the latest one; the last
KEEP checkpoints are kept. Files load with torch.load(weights_only=True).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jax_vae.common.runs import RunError
from torch_reference.step import TrainState

KEEP = 3
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoints:
    """The checkpoints folder of one run: save(step, ...), latest_step(), restore(...)."""

    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        self.directory = Path(directory).absolute()
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.directory / f"ckpt_{step:09d}.pt"

    def all_steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for f in os.listdir(self.directory) if (m := _NAME.match(f)))

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: TrainState, order: np.ndarray, rng: torch.Tensor,
             meta: dict[str, Any]) -> None:
        """Write checkpoint `step` (temp file + fsync + rename), then drop all but the last KEEP."""
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                   "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
                   "step": step, "order": torch.from_numpy(np.asarray(order, np.int32).copy()),
                   "rng": rng.clone(), "meta": meta}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".ckpt_{step:09d}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(step))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        _fsync_dir(self.directory)
        for old in self.all_steps()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)

    def _load(self, step: int | None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise RunError(f"no checkpoint in {self.directory}")
        try:
            return torch.load(self.path(step), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is one user-facing line
            raise RunError(f"cannot read checkpoint {self.path(step)} ({' '.join(str(err).split())[:200]})") from None

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        return self._load(step)["meta"]

    def restore(self, state: TrainState, n: int, rng: torch.Tensor, step: int | None = None
                ) -> tuple[TrainState, np.ndarray, torch.Tensor, dict[str, Any]]:
        """(state with model/optimizer/scheduler loaded in place, data order int32 [n], rng state,
        meta) of checkpoint `step` (default: the latest)."""
        payload = self._load(step)
        try:
            state.model.load_state_dict(payload["model"])
            state.optimizer.load_state_dict(payload["optimizer"])
            if state.scheduler is not None:
                state.scheduler.load_state_dict(payload["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise RunError(f"checkpoint {payload.get('step')} in {self.directory} does not fit this run "
                           f"({' '.join(str(err).split())[:200]})") from None
        order = payload["order"].numpy()
        if order.shape != (n,) or payload["rng"].shape != rng.shape:
            raise RunError(f"checkpoint {payload['step']} in {self.directory} is of a dataset of "
                           f"{order.shape[0]} examples, not {n}")
        state.step = int(payload["step"])
        return state, order, payload["rng"], payload["meta"]

    def close(self) -> None:
        pass


def load_params(path: Path, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state_dict, meta with 'config') from a run folder or its checkpoints/."""
    path = Path(path).absolute()
    ckpts = Checkpoints(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
    if ckpts.latest_step() is None:
        raise RunError(f"no PyTorch checkpoint found in {path}")
    payload = ckpts._load(step)
    return payload["model"], payload["meta"]
