"""Weight files on the JAX side (mirror of torch_reference/weights.py): safetensors exports read with
safetensors.numpy (torch is never imported) and the tensors of an orbax folder for a source key map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jax_vae.checkpoint import cause, local_target, read_quietly
from jax_vae.common.config.vae_config import VAEConfig, from_dict
from jax_vae.common.errors import RunError
from jax_vae.common.weights.convert import torch_to_flax
from jax_vae.common.weights.formats import flatten, read_safetensors


def from_state_dict(state: dict[str, np.ndarray], cfg: VAEConfig) -> dict:
    """jax-vae's PyTorch-layout state_dict -> Flax params (numpy), through the one converter."""
    return torch_to_flax(state, cfg)


def load_safetensors(path: Path) -> tuple[dict, dict[str, Any]]:
    """(Flax params, meta) of a safetensors export; its config comes from the header metadata."""
    state, meta = read_safetensors(path)
    if "config" not in meta:
        raise RunError(f"{path} carries no jax-vae config in its metadata; import it with --source")
    return from_state_dict(state, from_dict(meta["config"])), meta


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """{'a/b/c': array} of a pytree saved with orbax (e.g. Flax params), restored on this host's device."""
    path = Path(path).absolute()
    try:
        target = local_target(path)
        tree = read_quietly(lambda: ocp.StandardCheckpointer().restore(path, target))
    except Exception as err:  # noqa: BLE001 - one line, whatever orbax raises
        raise RunError(f"cannot read {path} as an orbax checkpoint folder ({cause(err)})") from None
    return flatten(jax.tree_util.tree_map(np.asarray, tree))
