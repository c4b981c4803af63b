"""`export`: weights from one framework to the other: load through one backend, convert, save
through the other.

To PyTorch (default): a JAX run folder, checkpoints folder or params export -> a state_dict file at
OUT (load it with `VAE(cfg).load_state_dict(torch.load(OUT, weights_only=True))`) plus OUT.json
holding the preset and config. To JAX (`--to-jax`): a state_dict file, a PyTorch checkpoint file or
run folder -> a params-only orbax checkpoint folder at OUT (readable by `evaluate` and `export`).
Outputs are written atomically; an existing OUT is never overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jax_vae.common import backends, runs
from jax_vae.common.config import VAEConfig, from_dict, to_dict
from jax_vae.common.convert import flax_to_torch, torch_to_flax
from jax_vae.common.errors import RunError
from jax_vae.common.files import check_writable
from jax_vae.common.presets import get_preset


def _framework_of(src: Path) -> str | None:
    """The framework of the run folder `src` is in (or is), else None."""
    for folder in (src, src.parent):
        record = runs.read_run(folder) if folder.is_dir() else None
        if record is not None:
            return str(record["framework"])
    return None


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


def export(src: Path, out: Path, to: str, step: int | None = None, preset: str | None = None) -> Path:
    """Weights of `src` (the other framework's) -> framework `to`'s format at `out`."""
    src, out = Path(src), Path(out)
    source = "torch" if to == "jax" else "jax"
    if out.exists() or Path(f"{out}.json").exists():
        raise RunError(f"{out} already exists; choose another --out")
    if not src.exists():
        raise RunError(f"{src} does not exist")
    check_writable(out, "export")  # before loading and converting
    found = _framework_of(src)
    if found is not None and found != source:
        hint = "use --to-jax to convert it to JAX" if found == "torch" else "convert it without --to-jax"
        raise RunError(f"{src} is a {'PyTorch' if found == 'torch' else 'JAX'} run; {hint}")
    if source == "torch" and src.is_dir() and found is None:
        raise RunError(f"{src} is not a PyTorch run folder; --to-jax reads PyTorch weights")
    params, meta = backends.get(source).load_params(src, step)
    cfg = _config(meta, src, preset)
    converted = torch_to_flax(params, cfg) if to == "jax" else flax_to_torch(params, cfg)
    backends.get(to).save_params(
        out,
        converted,
        {"preset": cfg.name, "config": to_dict(cfg), "source": str(src.absolute()), "step": meta.get("step")},
    )
    return out
