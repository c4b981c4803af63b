"""`export`: weights from one framework to the other: load through one backend, convert, save
through the other.

To PyTorch's layout (default): a JAX run folder, checkpoints folder or params export -> a state_dict
file at OUT, either `--format safetensors` (the default, except for an OUT ending in .pt or .pth:
no pickle, the preset and config in its header metadata, written without torch; a PyTorch run
exports to it as is) or `--format pt` (torch.save, needs torch; load it with
`VAE(cfg).load_state_dict(torch.load(OUT, weights_only=True))`, OUT.json beside it holds the preset
and config).
To JAX (`--to-jax`): a state_dict file (.safetensors read with safetensors.numpy, without torch), a
PyTorch checkpoint file or run folder -> a params-only orbax checkpoint folder at OUT (readable by
`evaluate` and `export`). Outputs are written atomically; an existing OUT is never overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jax_vae.common import backends
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig, from_dict, to_dict
from jax_vae.common.errors import RunError
from jax_vae.common.files import check_writable
from jax_vae.common.runs import folder as runs
from jax_vae.common.weights.convert import flax_to_torch, torch_to_flax
from jax_vae.common.weights.formats import format_of, is_safetensors, read_safetensors, write_safetensors
from jax_vae.common.weights.model_folder import write_model_folder
from jax_vae.common.weights.sources import check_shapes


def _config(meta: dict[str, Any], src: Path, preset: str | None) -> VAEConfig:
    """The config in `meta`, else the named preset's; a --preset that disagrees is an error."""
    if "config" not in meta:
        if preset is None:
            raise RunError(
                f"{src} carries no config (no {src.name}.json beside it); pass --preset to name its preset"
            )
        try:
            return get_preset(preset)
        except KeyError as err:
            raise RunError(err.args[0]) from None
    try:
        cfg = from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"{src} holds no usable config ({err})") from None
    if preset is not None and preset != cfg.name:
        raise RunError(f"{src} is of preset {cfg.name!r}, not {preset!r}")
    return cfg


def _torch_layout(src: Path, step: int | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(PyTorch-layout state_dict of arrays, meta) of a safetensors file (read without torch), a
    state_dict or checkpoint file, or a PyTorch run folder."""
    if is_safetensors(src):
        if step is not None:
            raise RunError(f"{src} is a safetensors export (one set of weights); drop --step")
        return read_safetensors(src)
    if src.is_dir() and runs.framework_of(src) != "torch":
        raise RunError(f"{src} is not a PyTorch run folder; --to-jax reads PyTorch weights")
    params, meta = backends.get("torch").load_params(src, step)
    return {k: v.detach().cpu().numpy() for k, v in params.items()}, meta


def export(
    src: Path,
    out: Path,
    to: str,
    step: int | None = None,
    preset: str | None = None,
    fmt: str | None = None,
) -> Path:
    """Weights of `src` -> framework `to`'s layout at `out` (for PyTorch's, `fmt` pt or safetensors)."""
    src, out = Path(src), Path(out)
    if to == "jax" and fmt is not None:
        raise RunError("--to-jax writes an orbax params folder; --format names a PyTorch-layout file")
    fmt = format_of(out, fmt)
    if out.exists() or Path(f"{out}.json").exists():
        raise RunError(f"{out} already exists; choose another --out")
    if not src.exists():
        raise RunError(f"{src} does not exist")
    check_writable(out, "export")  # before loading and converting
    found = runs.framework_of(src)
    torch_in = found == "torch" or is_safetensors(src) or (src.is_file() and found is None)
    if to == "jax" and found == "jax":
        raise RunError(f"{src} is a JAX run; convert it without --to-jax")
    if to == "torch" and torch_in and fmt == "pt":
        what = "a PyTorch run" if found == "torch" else "PyTorch-layout weights"
        raise RunError(f"{src} is {what}; use --to-jax to convert it to JAX, or --format safetensors")
    if torch_in or to == "jax":
        state, meta = _torch_layout(src, step)
        cfg = _config(meta, src, preset)
        check_shapes(state, cfg, str(src))
    else:
        params, meta = backends.get("jax").load_params(src, step)
        cfg = _config(meta, src, preset)
        state = flax_to_torch(params, cfg)
    record = {
        "preset": cfg.name,
        "config": to_dict(cfg),
        "source": str(src.absolute()),
        "step": meta.get("step"),
    }
    if to == "jax":
        backends.get("jax").save_params(out, torch_to_flax(state, cfg), record)
    elif fmt == "folder":
        write_model_folder(out, state, record, src)
    elif fmt == "safetensors":
        write_safetensors(out, state, record)
    else:
        backends.get("torch").save_params(out, state, record)
    return out
