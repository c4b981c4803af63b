"""Weight files on the PyTorch side (mirror of jax_vae/weights.py): safetensors exports read with
safetensors.torch and the tensors of a torch.save file (weights_only=True only) for a source key map."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.errors import RunError, one_line
from jax_vae.common.weights.formats import decode_metadata
from torch_reference.checkpoint import torch_load

WRAPPERS = ("state_dict", "model", "model_state_dict")  # checkpoint dicts that hold the state_dict


def from_state_dict(state: dict[str, np.ndarray], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    """jax-vae's PyTorch-layout state_dict of arrays -> tensors (the layout is already torch's)."""
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}  # a writable copy


def load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) of a safetensors export, read with safetensors.torch."""
    path = Path(path).absolute()
    try:
        state = safetensors.torch.load_file(str(path), device="cpu")
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = f.metadata()
    except (OSError, safetensors.SafetensorError) as err:
        raise RunError(f"cannot read {path} as a safetensors file ({one_line(err, 120)})") from None
    return state, decode_metadata(header, path)


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of tensors -> {'a.b': array}; other leaves (an epoch counter) are left out."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out |= _flat(value, name)
        elif isinstance(value, torch.Tensor):
            out[name] = value.detach().cpu().numpy()
    return out


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """{key: array} of a torch.save file: a state_dict, a dict of raw tensors, or a checkpoint dict
    holding one under 'state_dict' / 'model' / 'model_state_dict'."""
    payload = torch_load(Path(path).absolute())
    if not isinstance(payload, Mapping):
        raise RunError(f"{path} holds a {type(payload).__name__}, not a dict of tensors")
    for key in WRAPPERS:
        if isinstance(payload.get(key), Mapping):
            payload = payload[key]
            break
    tensors = _flat(payload)
    if not tensors:
        raise RunError(f"{path} holds no tensors")
    return tensors
