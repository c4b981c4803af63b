"""The sources' own checkpoints: one table of key maps from each source's parameter names onto jax-vae's.

Every map ends in jax-vae's PyTorch-layout state_dict (`encoder.hidden_0.weight` [out, in], `.bias`
[out]), which the one converter (jax_vae.common.weights.convert) takes to Flax and the PyTorch twin
loads as is.
A source's layer is (its weight key, its bias key, jax-vae layer, layout): layout "out_in" is a torch
nn.Linear weight [out, in], "in_out" a kernel already [in, out] (Flax, or wiseodd's raw tensors), which is
transposed here. Widths are read from the file (`fit_config`), so a source module trained with other
sizes (e.g. a 2-d latent) maps onto the source's preset with those sizes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jax_vae.common import backends
from jax_vae.common.config.options import SOURCE_NAMES
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig, apply_overrides
from jax_vae.common.errors import ConversionError, RunError
from jax_vae.common.runs import folder as runs
from jax_vae.common.weights.convert import expected_torch_shapes, flax_to_torch
from jax_vae.common.weights.formats import config_of, read_safetensors, read_tensors, weights_path

Layout = Literal["out_in", "in_out"]
OWN = SOURCE_NAMES[0]  # "jax-vae": its own files: exports, run folders, params folders (no key map)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One affine layer of a source: where its weight and bias are and which jax-vae layer it is."""

    weight: str
    bias: str
    target: str  # jax-vae `module.layer`
    layout: Layout


@dataclasses.dataclass(frozen=True)
class Source:
    """A source's key map, the preset that reproduces its module, and where it comes from."""

    name: str
    preset: str
    doc: str
    layers: tuple[Layer, ...]


def _torch(*pairs: tuple[str, str]) -> tuple[Layer, ...]:
    """nn.Linear attributes `name` -> (name.weight [out, in], name.bias)."""
    return tuple(Layer(f"{name}.weight", f"{name}.bias", target, "out_in") for name, target in pairs)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "pytorch-examples",
            "pytorch-examples",
            "pytorch/examples vae/main.py, an nn.Module state_dict: fc1 784->400, fc21 400->20 (mean), fc22 "
            "400->20 (logvar), fc3 20->400, fc4 400->784; ReLU hidden, sigmoid output",
            _torch(
                ("fc1", "encoder.hidden_0"),
                ("fc21", "encoder.mean"),
                ("fc22", "encoder.logvar"),
                ("fc3", "decoder.hidden_0"),
                ("fc4", "decoder.out"),
            ),
        ),
        Source(
            "minimalist",
            "minimalist",
            "the minimalist VAE's nn.Linear attributes: e_input2hidden 784->500, e_hidden2mean 500->2, "
            "e_hidden2logvar 500->2, d_latent2hidden 2->500, d_hidden2image 500->784",
            _torch(
                ("e_input2hidden", "encoder.hidden_0"),
                ("e_hidden2mean", "encoder.mean"),
                ("e_hidden2logvar", "encoder.logvar"),
                ("d_latent2hidden", "decoder.hidden_0"),
                ("d_hidden2image", "decoder.out"),
            ),
        ),
        Source(
            "deep-mse",
            "deep-mse",
            "the deep MSE VAE's nn.Sequential indices (ReLUs at the odd ones): encoder.0 784->256, "
            "encoder.2 256->128, encoder.4 128->32, fc_mu 32->10, fc_log_var 32->10, decoder.0 10->32, "
            "decoder.2 32->128, decoder.4 128->256, decoder.6 256->784",
            _torch(
                ("encoder.0", "encoder.hidden_0"),
                ("encoder.2", "encoder.hidden_1"),
                ("encoder.4", "encoder.hidden_2"),
                ("fc_mu", "encoder.mean"),
                ("fc_log_var", "encoder.logvar"),
                ("decoder.0", "decoder.hidden_0"),
                ("decoder.2", "decoder.hidden_1"),
                ("decoder.4", "decoder.hidden_2"),
                ("decoder.6", "decoder.out"),
            ),
        ),
        Source(
            "day37",
            "day37",
            "the Day 37 VAE's nn.Sequential without activations: encoder.0 784->256, encoder.1 256->64, "
            "encoder.2 64->20 (first 10 outputs the mean, last 10 sigma), decoder.0 10->64, decoder.1 "
            "64->256, decoder.2 256->784",
            _torch(
                ("encoder.0", "encoder.hidden_0"),
                ("encoder.1", "encoder.hidden_1"),
                ("encoder.2", "encoder.head"),
                ("decoder.0", "decoder.hidden_0"),
                ("decoder.1", "decoder.hidden_1"),
                ("decoder.2", "decoder.out"),
            ),
        ),
        Source(
            "wiseodd",
            "wiseodd",
            "wiseodd's post: raw tensors saved as a dict, already [in, out]: Wxh [784, 128], bxh, Whz_mu "
            "[128, 100], bhz_mu, Whz_var [128, 100] (log variance), bhz_var, Wzh [100, 128], bzh, Whx "
            "[128, 784], bhx",
            tuple(
                Layer(w, b, target, "in_out")
                for w, b, target in (
                    ("Wxh", "bxh", "encoder.hidden_0"),
                    ("Whz_mu", "bhz_mu", "encoder.mean"),
                    ("Whz_var", "bhz_var", "encoder.logvar"),
                    ("Wzh", "bzh", "decoder.hidden_0"),
                    ("Whx", "bhx", "decoder.out"),
                )
            ),
        ),
        Source(
            "flax-examples",
            "flax-examples",
            "google/flax examples/vae Linen params (an orbax folder or a flat .npz, keys optionally under "
            "params/): encoder/fc1, encoder/fc2_mean, encoder/fc2_logvar, decoder/fc1, decoder/fc2, each "
            "kernel [in, out] and bias",
            tuple(
                Layer(f"{name}/kernel", f"{name}/bias", target, "in_out")
                for name, target in (
                    ("encoder/fc1", "encoder.hidden_0"),
                    ("encoder/fc2_mean", "encoder.mean"),
                    ("encoder/fc2_logvar", "encoder.logvar"),
                    ("decoder/fc1", "decoder.hidden_0"),
                    ("decoder/fc2", "decoder.out"),
                )
            ),
        ),
    )
}
NAMES = SOURCE_NAMES  # (OWN, *SOURCES): tests/ checks the two agree


def get_source(name: str) -> Source | None:
    """The key map of `name` (None for jax-vae's own layout); unknown names list the known ones."""
    if name == OWN:
        return None
    if name not in SOURCES:
        raise RunError(f"unknown source {name!r}; source layouts: {', '.join(NAMES)}")
    return SOURCES[name]


def _strip_prefix(tensors: Mapping[str, np.ndarray], source: Source) -> dict[str, np.ndarray]:
    """Keys saved under a wrapper ('params/' of a Flax TrainState, 'module.' of DataParallel)."""
    want = {k for layer in source.layers for k in (layer.weight, layer.bias)}
    for prefix in ("params/", "params.", "module.", "model."):
        if not want & set(tensors) and all(k.startswith(prefix) for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items()}
    return dict(tensors)


def _guess(keys: set[str]) -> str:
    """' (its keys are those of --source X)' when another source's map fits the keys exactly."""
    for other in SOURCES.values():
        if keys == {k for layer in other.layers for k in (layer.weight, layer.bias)}:
            return f"; its keys are those of --source {other.name}"
    return ""


def map_keys(tensors: Mapping[str, Any], source: Source) -> dict[str, np.ndarray]:
    """A source's tensors -> jax-vae's PyTorch-layout state_dict (weights [out, in]); a missing,
    unexpected or misshapen key is a ConversionError naming it and the source layouts."""
    flat = _strip_prefix({k: np.asarray(v) for k, v in tensors.items()}, source)
    want = [k for layer in source.layers for k in (layer.weight, layer.bias)]
    layouts = f"source layouts: {', '.join(NAMES)}"
    missing = [k for k in want if k not in flat]
    if missing:
        raise ConversionError(
            f"--source {source.name}: key {missing[0]!r} is missing"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}{_guess(set(flat))}; {layouts}"
        )
    unexpected = sorted(set(flat) - set(want))
    if unexpected:
        raise ConversionError(
            f"--source {source.name}: unexpected key {unexpected[0]!r}"
            f"{f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''}; {layouts}"
        )
    state: dict[str, np.ndarray] = {}
    for layer in source.layers:
        w, b = flat[layer.weight], flat[layer.bias]
        if w.ndim != 2 or b.ndim != 1:
            raise ConversionError(
                f"--source {source.name}: {layer.weight!r} has shape {w.shape} and {layer.bias!r} "
                f"{b.shape}; a weight matrix and a bias vector were expected"
            )
        w = w.T if layer.layout == "in_out" else w  # [in, out] -> [out, in]
        if b.shape[0] != w.shape[0]:
            raise ConversionError(
                f"--source {source.name}: bias {layer.bias!r} has {b.shape[0]} entries, its weight "
                f"{layer.weight!r} has {w.shape[0]} outputs"
            )
        state[f"{layer.target}.weight"] = np.ascontiguousarray(w)
        state[f"{layer.target}.bias"] = b.copy()
    return state


def fit_config(cfg: VAEConfig, state: Mapping[str, np.ndarray], keep: Iterable[str] = ()) -> VAEConfig:
    """`cfg` with input_dim, hidden widths and latent_dim read from a state_dict's shapes (fields in
    `keep` left as given); the converter then checks every shape against the result."""

    def rows(module: str) -> list[int]:
        n = sum(1 for k in state if k.startswith(f"{module}.hidden_") and k.endswith(".weight"))
        return [int(state[f"{module}.hidden_{i}.weight"].shape[0]) for i in range(n)]

    found: dict[str, Any] = {
        "encoder_hidden": tuple(rows("encoder")),
        "decoder_hidden": tuple(rows("decoder")),
    }
    if "decoder.out.weight" in state:
        found["input_dim"] = int(state["decoder.out.weight"].shape[0])
    if "encoder.mean.weight" in state:
        found["latent_dim"] = int(state["encoder.mean.weight"].shape[0])
    elif "encoder.head.weight" in state:
        found["latent_dim"] = int(state["encoder.head.weight"].shape[0]) // 2
    changes = {k: v for k, v in found.items() if k not in keep and v != getattr(cfg, k)}
    try:
        return apply_overrides(cfg, changes) if changes else cfg
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(err.args[0] if err.args else str(err)) from None


def check_shapes(state: Mapping[str, np.ndarray], cfg: VAEConfig, what: str) -> None:
    """Every key and shape of a jax-vae state_dict as `cfg` expects (ConversionError naming the key)."""
    shapes = expected_torch_shapes(cfg)
    for key in sorted(set(shapes) - set(state)):
        raise ConversionError(f"{what}: key {key!r} is missing for preset {cfg.name!r}")
    for key in sorted(set(state) - set(shapes)):
        raise ConversionError(f"{what}: unexpected key {key!r} for preset {cfg.name!r}")
    for key, shape in shapes.items():
        if tuple(state[key].shape) != shape:
            raise ConversionError(
                f"{what}: {key!r} has shape {tuple(state[key].shape)}, preset {cfg.name!r} expects {shape}"
            )


def _own(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(PyTorch-layout state_dict, meta) of a jax-vae file: safetensors, a PyTorch export or run, or a
    JAX params export or run folder."""
    path = weights_path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    framework = "torch" if path.is_file() else runs.framework_of(path) or "jax"
    params, meta = backends.get(framework).load_params(path, None)
    if framework == "torch":
        return {k: v.detach().cpu().numpy() for k, v in params.items()}, meta
    return flax_to_torch(params, config_of(meta, path)), meta


def load(
    path: str | Path,
    source: str,
    cfg: VAEConfig | None = None,
    keep: Iterable[str] = (),
    fit: bool = True,
) -> tuple[dict[str, np.ndarray], VAEConfig, dict[str, Any]]:
    """(jax-vae PyTorch-layout state_dict, its config, meta) of a weight file in the layout of `source`.

    The config: `cfg` if given, else the file's own (jax-vae files) or the source's preset; with `fit`,
    its widths are read from the file (except the fields in `keep`); every shape is then checked."""
    path = Path(path).absolute()
    if not path.exists():
        raise RunError(f"{path} does not exist")
    spec = get_source(source)
    if spec is None:
        state, meta = _own(path)
        base = cfg or config_of(meta, path)
    else:
        tensors, meta = read_tensors(path)
        state = map_keys(tensors, spec)
        base = cfg or get_preset(spec.preset)
    fitted = fit_config(base, state, set(keep)) if fit else base
    check_shapes(state, fitted, f"{path} (--source {source})")
    return state, fitted, {**meta, "source": source, "source_file": str(path)}
