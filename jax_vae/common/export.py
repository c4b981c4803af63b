"""`export`: JAX checkpoint -> PyTorch state_dict file, and back (--to-jax), through jax_vae.common.convert.

To PyTorch: `torch.save(state_dict)` at OUT (load with `VAE(cfg).load_state_dict(torch.load(OUT))`),
plus OUT.json holding the preset and config. To JAX: a params-only orbax checkpoint folder at OUT
(params + meta with the config), readable by jax_vae.checkpoint.load_params and by `export` again.
Outputs are written to a temp path and renamed; an existing OUT is never overwritten.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from jax_vae.common import runs
from jax_vae.common.config import VAEConfig, from_dict, get_preset, to_dict
from jax_vae.common.convert import flax_to_torch, torch_to_flax

STATE_DICT_FORMAT = "jax_vae.state_dict/1"


def _config(meta: dict[str, Any], what: str) -> VAEConfig:
    try:
        return from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise runs.RunError(f"{what} holds no usable config ({err})") from None


def _framework_of(src: Path) -> str | None:
    for folder in (src, src.parent):
        record = runs.read_run(folder) if folder.is_dir() else None
        if record is not None:
            return record["framework"]
    return None


def _check_out(out: Path) -> None:
    if out.exists() or Path(str(out) + ".json").exists():
        raise runs.RunError(f"{out} already exists; choose another --out")


def export_to_torch(src: Path, out: Path, step: int | None = None) -> Path:
    """JAX run folder / checkpoints folder / params export -> state_dict file `out` (+ `out`.json)."""
    import torch

    from jax_vae.checkpoint import load_params
    src, out = Path(src), Path(out)
    _check_out(out)
    if not src.exists():
        raise runs.RunError(f"{src} does not exist")
    if _framework_of(src) == "torch":
        raise runs.RunError(f"{src} is a PyTorch run: its checkpoints already hold a state_dict; "
                            "use --to-jax to convert it to JAX")
    params, meta = load_params(src, step)
    cfg = _config(meta, str(src))
    state = flax_to_torch(params, cfg, as_torch=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    sidecar = {"format": STATE_DICT_FORMAT, "preset": cfg.name, "config": to_dict(cfg),
               "source": str(src.absolute()), "step": meta.get("step")}
    runs.atomic_write_text(Path(str(out) + ".json"), json.dumps(sidecar, indent=2) + "\n")
    return out


def _read_state_dict_file(src: Path, preset: str | None) -> tuple[dict, VAEConfig, int | None]:
    import torch
    try:
        payload = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one user-facing line
        raise runs.RunError(f"cannot read {src} as a PyTorch file ({' '.join(str(err).split())[:160]})") from None
    if isinstance(payload, dict) and "model" in payload and "meta" in payload:   # a run's checkpoint file
        return payload["model"], _config(payload["meta"], str(src)), payload.get("step")
    if not isinstance(payload, dict):
        raise runs.RunError(f"{src} holds a {type(payload).__name__}, not a state_dict")
    sidecar = Path(str(src) + ".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except ValueError as err:
            raise runs.RunError(f"{sidecar} is not JSON ({err})") from None
        cfg = _config(meta, str(sidecar))
        if preset is not None and preset != cfg.name:
            raise runs.RunError(f"{src} is of preset {cfg.name!r} (per {sidecar.name}), not {preset!r}")
        return payload, cfg, meta.get("step")
    if preset is None:
        raise runs.RunError(f"{src} has no {sidecar.name} beside it; pass --preset to name its preset")
    try:
        return payload, get_preset(preset), None
    except KeyError as err:
        raise runs.RunError(err.args[0]) from None


def export_to_jax(src: Path, out: Path, step: int | None = None, preset: str | None = None) -> Path:
    """state_dict file (or a PyTorch run folder / checkpoint file) -> JAX params checkpoint at `out`."""
    from jax_vae.checkpoint import save_params
    src, out = Path(src), Path(out)
    _check_out(out)
    if src.is_file():
        state_dict, cfg, ckpt_step = _read_state_dict_file(src, preset)
    elif src.is_dir():
        if _framework_of(src) != "torch":
            raise runs.RunError(f"{src} is not a PyTorch run folder; --to-jax reads PyTorch weights")
        from torch_reference.checkpoint import load_params
        state_dict, meta = load_params(src, step)
        cfg, ckpt_step = _config(meta, str(src)), meta.get("step")
        if preset is not None and preset != cfg.name:
            raise runs.RunError(f"{src} is a run of preset {cfg.name!r}, not {preset!r}")
    else:
        raise runs.RunError(f"{src} does not exist")
    params = torch_to_flax(state_dict, cfg)
    save_params(out, params, {"preset": cfg.name, "config": to_dict(cfg), "source": str(src.absolute()),
                              "step": ckpt_step})
    return out
