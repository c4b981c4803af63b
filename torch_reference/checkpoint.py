"""torch.save checkpoints of a PyTorch run (mirror of jax_vae/checkpoint.py).

A checkpoint of step k (`ckpt_<k>.pt`) holds the model, optimizer and scheduler state dicts, the
data order of the epoch in progress, the RNG state (the eps generator's state) and a JSON-able `meta`
(preset, config, epoch position, running epoch sums). Each file is written atomically
(jax_vae.common.files), so a crash mid-save leaves the previous checkpoint as the latest one; the last
KEEP checkpoints are kept. Files load with torch.load(weights_only=True).
A params export (`save_params`) is a state_dict file plus `<file>.json` holding its meta.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jax_vae.common.errors import RunError, one_line
from jax_vae.common.files import atomic_write, atomic_write_text
from torch_reference.step import TrainState

KEEP = 3
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


class Checkpoints:
    """The checkpoints folder of one run: save(step, ...), latest_step(), restore(...)."""

    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        self.directory = Path(directory).absolute()
        self.keep = keep

    def _path(self, step: int) -> Path:
        return self.directory / f"ckpt_{step:09d}.pt"

    def all_steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for f in os.listdir(self.directory) if (m := _NAME.match(f)))

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(
        self, step: int, state: TrainState, order: np.ndarray, rng: torch.Tensor, meta: dict[str, Any]
    ) -> None:
        """Write checkpoint `step` atomically, then drop all but the last KEEP."""
        payload = {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
            "step": step,
            "order": torch.from_numpy(np.asarray(order, np.int32).copy()),
            "rng": rng.clone(),
            "meta": meta,
        }
        atomic_write(self._path(step), lambda f: torch.save(payload, f))
        for old in self.all_steps()[: -self.keep]:
            self._path(old).unlink(missing_ok=True)

    def _load(self, step: int | None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise RunError(f"no checkpoint in {self.directory}")
        return _torch_load(self._path(step))

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        return self._load(step)["meta"]

    def restore(
        self, template: TrainState, n: int, rng: torch.Tensor, step: int | None = None
    ) -> tuple[TrainState, np.ndarray, torch.Tensor, dict[str, Any]]:
        """(`template` with model/optimizer/scheduler loaded in place, as torch state is mutable
        modules; data order int32 [n]; rng state; meta) of checkpoint `step` (default: the latest)."""
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
        pass


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one user-facing line
        raise RunError(f"cannot read {path} as a PyTorch file ({one_line(err, 200)})") from None


def load_params(path: Path, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state_dict, meta) from a run folder, its checkpoints/, a checkpoint file, or a
    state_dict file (its meta read from <file>.json when present, else {})."""
    path = Path(path).absolute()
    if path.is_file():
        payload = _torch_load(path)
        if isinstance(payload, dict) and "model" in payload and "meta" in payload:  # a run's checkpoint
            return payload["model"], payload["meta"]
        if not isinstance(payload, dict):
            raise RunError(f"{path} holds a {type(payload).__name__}, not a state_dict")
        sidecar = Path(f"{path}.json")
        if not sidecar.is_file():
            return payload, {}
        try:
            return payload, json.loads(sidecar.read_text())
        except ValueError as err:
            raise RunError(f"{sidecar} is not JSON ({err})") from None
    ckpts = Checkpoints(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
    if ckpts.latest_step() is None:
        raise RunError(f"no PyTorch checkpoint found in {path}")
    payload = ckpts._load(step)
    return payload["model"], payload["meta"]


def save_params(path: Path, params: dict[str, Any], meta: dict[str, Any]) -> None:
    """A state_dict file at `path` (load it with VAE(cfg).load_state_dict(torch.load(path))) and its
    meta in <path>.json, each written atomically; an existing `path` is never overwritten."""
    path = Path(path).absolute()
    if path.exists() or Path(f"{path}.json").exists():
        raise RunError(f"{path} already exists; choose another output path")
    state = {k: torch.from_numpy(np.array(v)) for k, v in params.items()}  # a writable copy
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write_text(Path(f"{path}.json"), json.dumps(meta, indent=2) + "\n")
