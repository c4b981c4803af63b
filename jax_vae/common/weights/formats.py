"""Weight files without pickles, and reading the tensors of any weight file a user holds.

safetensors: a jax-vae export is the PyTorch-layout state_dict (`encoder.hidden_0.weight` [out, in], ...)
with the header metadata {"format": "jax-vae", "preset": name, "config": the resolved VAEConfig as JSON,
"step": ..., "source": ...} (safetensors metadata values are strings). It is read here with
`safetensors.numpy` (no torch import: JAX users need no torch) and by the PyTorch twin with
`safetensors.torch`; the bytes hold no code, so nothing is executed on load.

`read_tensors(path)`: a flat {key: numpy array} from a .safetensors file, a .npz (allow_pickle=False), a
PyTorch file (through the PyTorch twin: torch.load(weights_only=True) only) or an orbax folder
(through the JAX twin), for the source key maps of jax_vae.common.weights.sources.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from jax_vae.common import backends
from jax_vae.common.config.vae_config import VAEConfig, from_dict
from jax_vae.common.errors import RunError, one_line
from jax_vae.common.files import atomic_write_bytes

FORMATS = ("pt", "safetensors", "folder")  # folder: a model folder (weights.model_folder)
SAFETENSORS_SUFFIX = ".safetensors"
PT_SUFFIXES = (".pt", ".pth")  # torch.save files; every other --out is written as safetensors
_META_JSON = ("config",)  # metadata values stored as JSON text; the others are plain strings


def format_of(path: str | Path, given: str | None = None) -> str:
    """The weight-file format to write at `path`: `given`, else pt for a .pt / .pth suffix, else
    safetensors (the default: no pickle, readable without torch)."""
    if given is not None:
        if given not in FORMATS:  # argparse checks the CLI's; this, a library caller's
            raise RunError(f"unknown format {given!r}; valid formats: {', '.join(FORMATS)}")
        return given
    return "pt" if Path(path).suffix.lower() in PT_SUFFIXES else "safetensors"


def is_safetensors(path: str | Path) -> bool:
    """Whether `path` is a safetensors file (by suffix; a misnamed file fails on read with one line)."""
    return Path(path).suffix == SAFETENSORS_SUFFIX and Path(path).is_file()


# A model folder (what `export --format folder` writes, weights.model_folder): these files, its
# config.json marked with MODEL_FORMAT (a run folder's config.json names a framework instead).
MODEL_FORMAT, MODEL_FILE, MODEL_CONFIG, MODEL_CARD = (
    "jax-vae-model",
    "model.safetensors",
    "config.json",
    "README.md",
)


def is_model_folder(path: str | Path) -> bool:
    """Whether `path` is a model folder: its config.json says format jax-vae-model."""
    config = Path(path) / MODEL_CONFIG
    if not (Path(path).is_dir() and config.is_file()):
        return False
    try:
        record = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == MODEL_FORMAT


def weights_path(path: str | Path) -> Path:
    """The weight file to read for `path`: a model folder's model.safetensors (one line if it is
    missing), else `path` itself."""
    path = Path(path)
    if not is_model_folder(path):
        return path
    if not (path / MODEL_FILE).is_file():
        raise RunError(f"{path} is a model folder without its {MODEL_FILE}")
    return path / MODEL_FILE


def config_of(meta: Mapping[str, Any], source: str | os.PathLike[str]) -> VAEConfig:
    """The VAEConfig a checkpoint, export or model folder records in its meta (one line if none or a
    broken one)."""
    if "config" not in meta:
        raise RunError(f"{source} carries no jax-vae config; pass --preset, or --source for another layout")
    try:
        return from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"{source} holds no usable config ({one_line(err, 200)})") from None


def encode_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """meta -> the string-valued safetensors header: the config as JSON, None left out."""
    out = {"format": "jax-vae"}
    for key, value in meta.items():
        if value is not None:
            out[key] = json.dumps(value, sort_keys=True) if key in _META_JSON else str(value)
    return out


def decode_metadata(header: Mapping[str, str] | None, path: Path) -> dict[str, Any]:
    """The safetensors header -> meta (config parsed, step an int); {} for a file with no metadata."""
    meta: dict[str, Any] = dict(header or {})
    for key in _META_JSON:
        if key in meta:
            try:
                meta[key] = json.loads(meta[key])
            except ValueError as err:
                raise RunError(f"{path}: the {key!r} metadata is not JSON ({one_line(err, 80)})") from None
    if "step" in meta:
        meta["step"] = int(meta["step"]) if str(meta["step"]).lstrip("-").isdigit() else None
    return meta


def write_safetensors(path: str | Path, state: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """A state_dict of arrays -> a safetensors file at `path`, written atomically, never overwritten."""
    path = Path(path).absolute()
    if path.exists():
        raise RunError(f"{path} already exists; choose another output path")
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in state.items()}
    atomic_write_bytes(path, safetensors.numpy.save(arrays, metadata=encode_metadata(meta)))


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state_dict of numpy arrays, meta) of a safetensors file, without torch."""
    path = Path(path).absolute()
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            header = f.metadata()
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - not a dict
    except (OSError, safetensors.SafetensorError) as err:
        raise RunError(f"cannot read {path} as a safetensors file ({one_line(err, 120)})") from None
    return state, decode_metadata(header, path)


def _flatten(
    tree: Mapping[Any, Any], prefix: str, sep: str, out: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {'a<sep>b': array}."""
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            _flatten(value, name, sep, out)
        else:
            out[name] = np.asarray(value)
    return out


def flatten(tree: Mapping[str, Any], sep: str = "/") -> dict[str, np.ndarray]:
    """Nested dicts of arrays (a Flax params tree) -> one flat dict keyed 'a/b/c'."""
    return _flatten(tree, "", sep, {})


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz file (no pickled objects)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise RunError(f"cannot read {path} as a .npz file ({one_line(err, 120)})") from None


def read_tensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(flat {key: numpy array}, meta) of any weight file: .safetensors, .npz, an orbax folder (the
    JAX twin reads it) or a PyTorch file (the PyTorch twin: torch.load(weights_only=True) only)."""
    path = weights_path(Path(path).absolute())
    if not path.exists():
        raise RunError(f"{path} does not exist")
    if path.suffix == SAFETENSORS_SUFFIX:
        return read_safetensors(path)
    if path.suffix == ".npz":
        return read_npz(path), {}
    framework = "jax" if path.is_dir() else "torch"
    try:
        backend = backends.get(framework)
    except ImportError as err:
        need = "orbax (the JAX side) for a folder" if framework == "jax" else "torch for a PyTorch file"
        raise RunError(
            f"reading {path} needs {need} ({one_line(err, 80)}); convert it to .safetensors or .npz"
        ) from None
    return backend.read_tensors(path), {}
