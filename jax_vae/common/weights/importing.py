"""`import`: a source's own checkpoint (jax_vae.common.weights.sources) -> jax-vae weights of one framework.

JAX: a params-only orbax folder at OUT (what `export --to-jax` writes; `evaluate --run OUT`, `export OUT`
and `train --init-from OUT` read it). PyTorch: a state_dict file at OUT, torch.save with OUT.json for an OUT
ending in .pt or .pth (or --format pt), else safetensors. The meta records the preset, the
fitted config, the source name and file. An existing OUT is never overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jax_vae.common import backends
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import apply_overrides, to_dict
from jax_vae.common.errors import RunError
from jax_vae.common.files import check_writable
from jax_vae.common.weights import sources
from jax_vae.common.weights.formats import format_of, write_safetensors


def import_weights(
    framework: str,
    file: Path,
    source: str,
    out: Path,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    fmt: str | None = None,
) -> Path:
    """`file` in the layout of `source` -> `framework`'s jax-vae weights at `out`."""
    file, out = Path(file), Path(out)
    if out.exists() or Path(f"{out}.json").exists():
        raise RunError(f"{out} already exists; choose another --out")
    if framework == "jax" and fmt is not None:
        raise RunError("the JAX side writes an orbax params folder; --format names a PyTorch-layout file")
    check_writable(out, "import")
    try:
        base = get_preset(preset) if preset else None
        state, cfg, meta = sources.load(file, source, base, keep=set(overrides or {}))
        cfg = apply_overrides(cfg, overrides or {})
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(err.args[0] if err.args else str(err)) from None
    sources.check_shapes(state, cfg, f"{file} (--source {source})")
    record = {
        "preset": cfg.name,
        "config": to_dict(cfg),
        "source": meta["source"],
        "source_file": meta["source_file"],
        "step": meta.get("step"),
    }
    if framework == "torch" and format_of(out, fmt) == "safetensors":
        write_safetensors(out, state, record)
    else:
        backend = backends.get(framework)
        backend.save_params(out, backend.from_state_dict(state, cfg), record)
    return out
