"""The named parts a VAE is built from, and which VAEConfig fields configure each part.

A VAEConfig stays one flat frozen dataclass (config.json, `--set` and the presets read it so), but
every field belongs to exactly one part (tests/models/test_parts.py checks it):

    network     the encoder and decoder bodies (arch: "mlp" | "conv") and their layers
    posterior   q(z|x): a diagonal Gaussian, its head (encoder_head) and scale (scale_param)
    prior       p(z): the standard normal (no field yet; a learned prior adds its kind and fields)
    likelihood  p(x|z): the decoder's output (decoder_output) and -log p(x|z) (likelihood)
    objective   the KL form (kl), ELBO or IWAE (objective), samples, beta and its warm-up, reduction
    optimizer, data, schedule, run: what trains it, on what, for how long, and the name and seed

Each implementation builds the model from the parts' kinds through one table per part, never a
branch on a preset name: NETWORKS in jax_vae/linen/models.py, jax_vae/nnx/models.py and
torch_reference/nn/models.py (arch -> encoder and decoder classes); LIKELIHOODS, KL_TERMS and
OBJECTIVES in jax_vae/losses.py and torch_reference/losses.py. A new family adds a kind to the parts
it changes (a file per implementation with its modules, a row in each table, its fields here and in
VAEConfig) and presets: ARCHITECTURE.md walks through it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from jax_vae.common.config.vae_config import VAEConfig

Part = Literal[
    "network", "posterior", "prior", "likelihood", "objective", "optimizer", "data", "schedule", "run"
]

PART_FIELDS: dict[Part, tuple[str, ...]] = {
    "network": (
        "arch",
        "input_dim",
        "image_shape",
        "image_channels",
        "conv_channels",
        "conv_kernel",
        "conv_stride",
        "conv_padding",
        "deconv_channels",
        "deconv_padding",
        "output_padding",
        "decoder_start",
        "decoder_start_activation",
        "final_layer",
        "batch_norm",
        "encoder_hidden",
        "latent_dim",
        "decoder_hidden",
        "activation",
        "init",
    ),
    "posterior": ("encoder_head", "scale_param"),
    "prior": (),
    "likelihood": ("decoder_output", "likelihood"),
    "objective": (
        "kl",
        "objective",
        "num_samples",
        "beta",
        "kl_warmup_steps",
        "reduction",
        "eval_use_mean",
        "manifold_grid",
    ),
    "optimizer": (
        "optimizer",
        "lr",
        "weight_decay",
        "lr_decay",
        "lr_schedule",
        "lr_gamma",
        "b1",
        "b2",
        "adam_eps",
    ),
    "data": ("dataset", "test_fraction", "binarization", "resize"),
    "schedule": ("batch_size", "micro_batch", "epochs", "steps", "drop_last"),
    "run": ("name", "seed"),
}


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """The kind of each model part of a config: what each implementation's tables are keyed by."""

    network: str  # NETWORKS
    posterior: str
    prior: str
    likelihood: str  # LIKELIHOODS
    objective: str  # OBJECTIVES (with KL_TERMS[cfg.kl])


def model_parts(cfg: VAEConfig) -> ModelParts:
    """The parts of `cfg`: network = arch, posterior = diagonal Gaussian of its scale parameter, the
    standard normal prior, likelihood and objective as configured."""
    return ModelParts(
        network=cfg.arch,
        posterior=f"gaussian_{cfg.scale_param}",
        prior="standard_normal",
        likelihood=cfg.likelihood,
        objective=cfg.objective,
    )


def part_fields(cfg: VAEConfig, part: Part) -> dict[str, Any]:
    """The fields of one part of `cfg`, by name (what a part's module is configured by)."""
    return {name: getattr(cfg, name) for name in PART_FIELDS[part]}
