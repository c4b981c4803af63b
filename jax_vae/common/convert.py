"""The one converter between PyTorch state_dicts and Flax params; every layout difference is here.

torch  `encoder.hidden_0.weight` [out, in]  <->  flax params['encoder']['hidden_0']['kernel'] [in, out]
torch  `encoder.hidden_0.bias`   [out]      <->  flax params['encoder']['hidden_0']['bias']   [out]
Both directions are shape-checked against the config's layer_specs and are exact (a transpose).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jax_vae.common.config import VAEConfig, layer_specs
from jax_vae.common.errors import ConversionError


def _to_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):  # torch.Tensor, without importing torch
        t = t.detach().cpu().numpy()
    return np.asarray(t)


def expected_torch_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape, in module order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for module, layer, fan_in, fan_out in layer_specs(cfg):
        shapes[f"{module}.{layer}.weight"] = (fan_out, fan_in)
        shapes[f"{module}.{layer}.bias"] = (fan_out,)
    return shapes


def _check_keys(got: set[str], want: set[str], what: str, preset: str) -> None:
    missing, unexpected = sorted(want - got), sorted(got - want)
    if missing:
        raise ConversionError(
            f"{what} for preset {preset!r} is missing key {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if unexpected:
        raise ConversionError(
            f"{what} for preset {preset!r} has unexpected key {unexpected[0]!r}"
            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )


def torch_to_flax(state_dict: Mapping[str, Any], cfg: VAEConfig) -> dict:
    """torch state_dict (tensors or arrays) -> Flax params of numpy arrays, dtype kept."""
    shapes = expected_torch_shapes(cfg)
    _check_keys(set(state_dict), set(shapes), "state_dict", cfg.name)
    params: dict = {}
    for key, shape in shapes.items():
        value = _to_numpy(state_dict[key])
        if value.shape != shape:
            raise ConversionError(
                f"state_dict key {key!r} has shape {value.shape}, preset {cfg.name!r} expects {shape}"
            )
        module, layer, kind = key.split(".")
        leaf = params.setdefault(module, {}).setdefault(layer, {})
        if kind == "weight":
            leaf["kernel"] = np.ascontiguousarray(value.T)  # [out, in] -> [in, out]
        else:
            leaf["bias"] = value.copy()  # [out]
    return params


def flax_to_torch(params: Mapping[str, Any], cfg: VAEConfig) -> dict[str, np.ndarray]:
    """Flax params -> state_dict {key: numpy array, weights [out, in]}."""
    flat = {}
    for module, layers in params.items():
        for layer, leaves in layers.items():
            for kind, value in leaves.items():
                flat[f"{module}.{layer}.{kind}"] = _to_numpy(value)
    shapes = expected_torch_shapes(cfg)
    want = {k.replace(".weight", ".kernel") for k in shapes}
    _check_keys(set(flat), want, "Flax params", cfg.name)
    state = {}
    for key, shape in shapes.items():
        flax_key = key.replace(".weight", ".kernel")
        value = flat[flax_key]
        value = value.T if key.endswith(".weight") else value  # [in, out] -> [out, in]
        if value.shape != shape:
            raise ConversionError(
                f"Flax param {flax_key!r} has shape {flat[flax_key].shape}, "
                f"preset {cfg.name!r} expects {shape[::-1] if len(shape) == 2 else shape}"
            )
        state[key] = np.array(value, order="C")  # a writable copy
    return state
