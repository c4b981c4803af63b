"""The one converter between PyTorch state_dicts and Flax params; every layout difference is here.

torch  `encoder.hidden_0.weight` [out, in]  <->  flax params['encoder']['hidden_0']['kernel'] [in, out]
torch  `encoder.hidden_0.bias`   [out]      <->  flax params['encoder']['hidden_0']['bias']   [out]
Both directions are shape-checked against the config's layer_specs and are exact (a transpose).
Convolutional layers (conv, transposed conv, BatchNorm, a Linear after a flatten or before a reshape)
are described by LayerSpecs and mapped by kind: the table above `LayerSpec` below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

from jax_vae.common.config.architecture import LayerSpec, plan
from jax_vae.common.config.vae_config import VAEConfig, layer_specs
from jax_vae.common.errors import ConversionError

# A weight's key: a state_dict key, or (collection, 'prefix.leaf') of flat Flax variables.
_Key = TypeVar("_Key", str, tuple[str, str])


def _to_numpy(t: Any) -> np.ndarray:  # t: a torch.Tensor, a jax or numpy array
    if hasattr(t, "detach"):  # torch.Tensor, without importing torch
        t = t.detach().cpu().numpy()
    return np.asarray(t)


def conv_specs(cfg: VAEConfig) -> list[LayerSpec]:
    """The LayerSpecs of a conv VAE (jax_vae.common.config.architecture.plan), in torch module order."""
    return list(plan(cfg).specs)


def expected_torch_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape, in module order."""
    if cfg.arch == "conv":
        return {k: v for spec in conv_specs(cfg) for k, v in layer_torch_shapes(spec).items()}
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


def torch_to_flax(state_dict: Mapping[str, Any], cfg: VAEConfig) -> dict[str, Any]:
    """torch state_dict (tensors or arrays) -> the JAX weights as numpy arrays, dtype kept: Flax params,
    or with cfg.batch_norm the variables {'params': ..., 'batch_stats': ...}."""
    if cfg.arch == "conv":
        variables = torch_to_flax_variables(state_dict, conv_specs(cfg), cfg.name)
        return variables if cfg.batch_norm else variables["params"]
    shapes = expected_torch_shapes(cfg)
    _check_keys(set(state_dict), set(shapes), "state_dict", cfg.name)
    params: dict[str, Any] = {}
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


def flax_to_torch(
    params: Mapping[str, Any], cfg: VAEConfig, num_batches_tracked: int = 0
) -> dict[str, np.ndarray]:
    """The JAX weights (as torch_to_flax returns them) -> state_dict {key: numpy array, weights [out,
    in]}; BatchNorm's num_batches_tracked is `num_batches_tracked` (JAX keeps no count)."""
    if cfg.arch == "conv":
        variables = params if cfg.batch_norm else {"params": params}
        return flax_to_torch_variables(variables, conv_specs(cfg), cfg.name, num_batches_tracked)
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


# --- Convolutional layers: a LayerSpec per torch layer, mapped both ways by its kind.
#
# torch (NCHW)                                       Flax (NHWC)
# conv            weight [O, I, kh, kw]         <->  kernel [kh, kw, I, O]          (transpose 2, 3, 1, 0)
# conv_transpose  weight [I, O, kh, kw]         <->  kernel [kh, kw, O, I]          (transpose 2, 3, 1, 0;
#                 no flip: the layer flips, lax.conv_transpose(transpose_kernel=True), Keras' layout)
# batchnorm       weight, bias [C]              <->  params scale, bias [C]
#                 running_mean, running_var [C] <->  batch_stats mean, var [C]      (the same values:
#                 both store the unbiased running variance, conv_layers.BatchNorm2d updates it as torch)
#                 num_batches_tracked []        ->   dropped (torch reads it only when momentum is None;
#                 flax -> torch writes the caller's count, default 0)
# linear_from_chw weight [out, C*H*W]           <->  kernel [H*W*C, out]            (a Linear after a
#                 flatten: torch's columns are in (c, h, w) order, NHWC's rows in (h, w, c) order)
# linear_to_chw   weight [C*H*W, in], bias [C*H*W] <-> kernel [in, H*W*C], bias [H*W*C] (a Linear
#                 feeding a reshape to C x H x W: rows and the bias permuted the same way)
# Every map is an exact permutation (no arithmetic), so round trips are bit for bit.


def chw_permutation(chw: tuple[int, int, int]) -> np.ndarray:
    """perm [C*H*W]: NHWC-flatten position (h, w, c) holds NCHW-flatten index c*H*W + h*W + w."""
    c, h, w = chw
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def layer_torch_shapes(spec: LayerSpec) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape of one layer, in torch's order."""
    i, o, (kh, kw), p = spec.in_features, spec.out_features, spec.kernel_size, spec.prefix
    if spec.kind == "batchnorm":
        return {f"{p}.{k}": (o,) for k in ("weight", "bias", "running_mean", "running_var")} | {
            f"{p}.num_batches_tracked": ()
        }
    weight = {"conv": (o, i, kh, kw), "conv_transpose": (i, o, kh, kw)}.get(spec.kind, (o, i))
    return {f"{p}.weight": weight, f"{p}.bias": (o,)}


def layer_flax_shapes(spec: LayerSpec) -> dict[tuple[str, str], tuple[int, ...]]:
    """(collection, 'prefix.leaf') -> shape of one layer's Flax variables."""
    i, o, (kh, kw), p = spec.in_features, spec.out_features, spec.kernel_size, spec.prefix
    if spec.kind == "batchnorm":
        vector: tuple[int, ...] = (o,)
        leaves = (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var"))
        return {(col, f"{p}.{leaf}"): vector for col, leaf in leaves}
    kernel = {"conv": (kh, kw, i, o), "conv_transpose": (kh, kw, o, i)}.get(spec.kind, (i, o))
    return {("params", f"{p}.kernel"): kernel, ("params", f"{p}.bias"): (o,)}


def _perm(spec: LayerSpec) -> np.ndarray:
    if spec.chw is None:
        raise ConversionError(f"layer {spec.prefix!r} of kind {spec.kind!r} needs its (C, H, W) shape")
    perm = chw_permutation(spec.chw)
    size = spec.in_features if spec.kind == "linear_from_chw" else spec.out_features
    if perm.size != size:
        raise ConversionError(
            f"layer {spec.prefix!r}: (C, H, W) {spec.chw} has {perm.size} elements, not {size}"
        )
    return perm


def _weight_to_flax(spec: LayerSpec, w: np.ndarray) -> np.ndarray:
    if spec.kind == "conv":
        return w.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
    if spec.kind == "conv_transpose":
        return w.transpose(2, 3, 1, 0)  # [I, O, kh, kw] -> [kh, kw, O, I]
    if spec.kind == "linear_from_chw":
        return w[:, _perm(spec)].T  # [out, CHW] columns (c, h, w) -> [HWC, out] rows (h, w, c)
    if spec.kind == "linear_to_chw":
        return w[_perm(spec), :].T  # [CHW, in] rows (c, h, w) -> [in, HWC] columns (h, w, c)
    return w.T  # [out, in] -> [in, out]


def _kernel_to_torch(spec: LayerSpec, k: np.ndarray) -> np.ndarray:
    if spec.kind in ("conv", "conv_transpose"):
        return k.transpose(3, 2, 0, 1)  # the inverse of transpose(2, 3, 1, 0)
    if spec.kind == "linear_from_chw":
        return k.T[:, np.argsort(_perm(spec))]  # [HWC, out] -> [out, CHW]
    if spec.kind == "linear_to_chw":
        return k.T[np.argsort(_perm(spec)), :]  # [in, HWC] -> [CHW, in]
    return k.T


def _get(mapping: Mapping[_Key, Any], key: _Key, shape: tuple[int, ...], what: str, name: str) -> np.ndarray:
    """mapping[key] as numpy, or ConversionError naming the key when it is missing or misshapen."""
    if key not in mapping:
        raise ConversionError(f"{what} for {name!r} is missing key {_key_text(key)!r}")
    array = _to_numpy(mapping[key])
    if array.shape != shape:
        raise ConversionError(
            f"{what} key {_key_text(key)!r} has shape {array.shape}, {name!r} expects {shape}"
        )
    return array


def _key_text(key: str | tuple[str, str]) -> str:
    return f"{key[0]}:{key[1]}" if isinstance(key, tuple) else str(key)


def layer_to_flax(
    spec: LayerSpec, state_dict: Mapping[str, Any], name: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(params leaf, batch_stats leaf: {} unless batchnorm) of one torch layer, as numpy copies, dtype
    kept; every key of the layer must be in state_dict with its torch shape."""
    got = {k: _get(state_dict, k, s, "state_dict", name) for k, s in layer_torch_shapes(spec).items()}
    p = spec.prefix
    if spec.kind == "batchnorm":  # num_batches_tracked: shape-checked above, then dropped
        params = {"scale": got[f"{p}.weight"].copy(), "bias": got[f"{p}.bias"].copy()}
        return params, {"mean": got[f"{p}.running_mean"].copy(), "var": got[f"{p}.running_var"].copy()}
    bias = got[f"{p}.bias"]
    bias = bias[_perm(spec)] if spec.kind == "linear_to_chw" else bias.copy()  # [CHW] -> [HWC]
    return {"kernel": np.ascontiguousarray(_weight_to_flax(spec, got[f"{p}.weight"])), "bias": bias}, {}


def layer_to_torch(
    spec: LayerSpec, flat: Mapping[tuple[str, str], Any], name: str, num_batches_tracked: int = 0
) -> dict[str, np.ndarray]:
    """One layer's state_dict entries (numpy copies) from flat Flax variables
    {(collection, 'prefix.leaf'): array}, every one of the layer's present with its Flax shape."""
    got = {k: _get(flat, k, s, "Flax variables", name) for k, s in layer_flax_shapes(spec).items()}
    p = spec.prefix
    if spec.kind == "batchnorm":
        return {
            f"{p}.weight": np.array(got[("params", f"{p}.scale")]),
            f"{p}.bias": np.array(got[("params", f"{p}.bias")]),
            f"{p}.running_mean": np.array(got[("batch_stats", f"{p}.mean")]),
            f"{p}.running_var": np.array(got[("batch_stats", f"{p}.var")]),
            f"{p}.num_batches_tracked": np.array(num_batches_tracked, np.int64),
        }
    bias = got[("params", f"{p}.bias")]
    bias = bias[np.argsort(_perm(spec))] if spec.kind == "linear_to_chw" else np.array(bias)
    weight = _kernel_to_torch(spec, got[("params", f"{p}.kernel")])
    return {f"{p}.weight": np.array(weight, order="C"), f"{p}.bias": bias}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'encoder': {'conv_0': {'kernel': a}}} -> {'encoder.conv_0.kernel': a}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, v in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = v
    return tree


def torch_to_flax_variables(
    state_dict: Mapping[str, Any], specs: list[LayerSpec], name: str
) -> dict[str, Any]:
    """torch state_dict -> {'params': ..., 'batch_stats': ...} (the latter only with a batchnorm)."""
    _check_keys(set(state_dict), {k for s in specs for k in layer_torch_shapes(s)}, "state_dict", name)
    flat: dict[str, dict[str, np.ndarray]] = {"params": {}, "batch_stats": {}}
    for spec in specs:
        params, stats = layer_to_flax(spec, state_dict, name)
        flat["params"].update({f"{spec.prefix}.{k}": v for k, v in params.items()})
        flat["batch_stats"].update({f"{spec.prefix}.{k}": v for k, v in stats.items()})
    return {col: _nest(leaves) for col, leaves in flat.items() if leaves}


def flax_to_torch_variables(
    variables: Mapping[str, Any], specs: list[LayerSpec], name: str, num_batches_tracked: int = 0
) -> dict[str, np.ndarray]:
    """{'params': ..., 'batch_stats': ...} -> torch state_dict of numpy arrays, in spec order;
    every BatchNorm's num_batches_tracked is `num_batches_tracked` (JAX keeps no count)."""
    flat = {(col, k): v for col, tree in variables.items() for k, v in _flatten(tree).items()}
    want = {key for s in specs for key in layer_flax_shapes(s)}
    _check_keys({_key_text(k) for k in flat}, {_key_text(k) for k in want}, "Flax variables", name)
    state: dict[str, np.ndarray] = {}
    for spec in specs:
        state.update(layer_to_torch(spec, flat, name, num_batches_tracked))
    return state
