"""What a run starts from: its data (read, binarized, sized to the user's own images, checked) and its
initial weights (--init-from). Framework-free; used by jax_vae.common.training.loop."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jax_vae.common.backends import Backend, Weights
from jax_vae.common.config.options import TrainOptions
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.data.catalog import parse_dataset
from jax_vae.common.data.datasets import binarize_for_evaluation, load_dataset
from jax_vae.common.errors import RunError
from jax_vae.common.weights import sources


def loss_unit(cfg: VAEConfig) -> str:
    """Bernoulli presets report nats per image; MSE presets their squared-error objective per image."""
    return "nats/image" if cfg.likelihood.startswith("bce") else f"{cfg.likelihood}+KL per image (not nats)"


def prepare_data(
    cfg: VAEConfig, data_dir: str | os.PathLike[str] | None, download: bool
) -> dict[str, np.ndarray]:
    """The preset's dataset; a dynamic preset's test split is binarized once (as evaluation does)."""
    data = dict(
        load_dataset(
            cfg.dataset, data_dir, cfg.binarization, cfg.seed, download, cfg.test_fraction, cfg.resize
        )
    )
    if cfg.binarization == "dynamic":
        data["test"] = binarize_for_evaluation(data["test"])
    return data


def fit_to_data(
    cfg: VAEConfig, data: dict[str, np.ndarray] | None, download: bool
) -> tuple[VAEConfig, dict[str, np.ndarray] | None]:
    """(config, data) for the user's own data and CelebA: its path absolute (as config.json records it),
    its input_dim, image_shape and image_channels those of its images (the first and last layers follow).
    Other datasets: resize > 0 sets image_shape (resize, resize) and input_dim resize^2 * image_channels;
    their data are read later (from the run's data folder)."""
    dataset = parse_dataset(cfg.dataset).absolute()
    if not dataset.sized_by_data:
        if cfg.resize:
            size = cfg.resize
            cfg = dataclasses.replace(
                cfg, input_dim=size * size * cfg.image_channels, image_shape=(size, size)
            )
        return cfg, data
    cfg = dataclasses.replace(cfg, dataset=dataset.name)
    data = prepare_data(cfg, None, download) if data is None else data
    shape = tuple(int(v) for v in data.get("image_shape", ()))
    channels = int(data.get("image_channels", 1))
    fitted = dataclasses.replace(
        cfg, input_dim=int(data["train"].shape[-1]), image_shape=shape, image_channels=channels
    )
    return fitted, data


def check_data(cfg: VAEConfig, data: dict[str, np.ndarray]) -> int:
    """Shapes and sizes the run needs; returns the number of training images."""
    train, test = data["train"], data["test"]
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise RunError(f"dataset arrays must be [N, D] with one D, got {train.shape} and {test.shape}")
    if train.shape[1] != cfg.input_dim:
        raise RunError(
            f"preset {cfg.name} expects {cfg.input_dim} pixels per image, {cfg.dataset} "
            f"images have {train.shape[1]}; pass --set input_dim={train.shape[1]}"
        )
    n = int(train.shape[0])
    if cfg.batch_size > n:
        hint = (
            f" (test_fraction {cfg.test_fraction:g} held out)"
            if parse_dataset(cfg.dataset).sized_by_data
            else ""
        )
        raise RunError(
            f"batch size {cfg.batch_size} is larger than the {n} training images of {cfg.dataset}{hint}"
        )
    return n


def initial_params(backend: Backend, cfg: VAEConfig, opts: TrainOptions) -> Weights | None:
    """The weights of --init-from in the twin's layout (every key and shape checked against `cfg`), or
    None for the preset's init."""
    if opts.init_from is None:
        return None
    state, _, _ = sources.load(opts.init_from, opts.source, cfg, fit=False)
    return backend.from_state_dict(state, cfg)
