"""Framework-free VAE configs: one frozen dataclass and the named preset table.

Both `jax_vae` and `torch_reference` read these configs; nothing here imports jax or torch.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

ACTIVATIONS = ("relu", "tanh", "identity")
ENCODER_HEADS = ("separate", "split")
SCALE_PARAMS = ("logvar", "sigma")
DECODER_OUTPUTS = ("sigmoid", "logits", "identity")
LIKELIHOODS = ("bce_probs", "bce_logits", "mse_sum", "mse_mean")
KL_FORMS = ("analytic", "day37")
REDUCTIONS = ("sum", "mean")
INITS = ("torch", "lua", "wiseodd", "flax", "glorot")
LR_SCHEDULES = ("constant", "iwae")
OPTIMIZERS = ("adam", "lua_adam")
BINARIZATIONS = ("none", "static", "dynamic")
OBJECTIVES = ("elbo", "iwae")
DATASETS = ("mnist", "fashion_mnist", "rectangles")

# Which decoder output each likelihood consumes.
_LIKELIHOOD_OUTPUT = {"bce_probs": "sigmoid", "bce_logits": "logits",
                      "mse_sum": "identity", "mse_mean": "identity"}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """A VAE design, its objective, optimizer and data: everything a run needs."""

    name: str
    # --- architecture
    input_dim: int = 784
    encoder_hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    decoder_hidden: tuple[int, ...] = (400,)
    activation: str = "relu"          # after every hidden layer (encoder and decoder)
    encoder_head: str = "separate"    # separate Dense heads, or one Dense of 2*latent split in two
    scale_param: str = "logvar"       # what the encoder's second output means: log sigma^2 or sigma
    decoder_output: str = "sigmoid"   # sigmoid -> probabilities, logits, identity -> real outputs
    init: str = "torch"               # weight/bias initializer family (see jax_vae.models.init_fns)
    # --- objective
    likelihood: str = "bce_probs"
    kl: str = "analytic"
    reduction: str = "sum"            # how per-example losses reduce over the batch
    objective: str = "elbo"           # elbo (L-sample average) or iwae (log-mean-exp over samples)
    num_samples: int = 1              # L samples of z per input
    beta: float = 1.0                 # KL weight
    kl_warmup_steps: int = 0          # beta ramps linearly from 0 over this many steps (0 = off)
    eval_use_mean: bool = False       # evaluation decodes z = mu instead of a sample
    # --- optimizer
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0         # coupled L2, as torch.optim.Adam(weight_decay=...)
    lr_decay: float = 0.0             # lua_adam: lr / (1 + t * lr_decay)
    lr_schedule: str = "constant"     # iwae: lr * 10**(-i/7) during stage i (3**i epochs each)
    b1: float = 0.9
    b2: float = 0.999
    adam_eps: float = 1e-8
    # --- data and schedule
    dataset: str = "mnist"
    binarization: str = "none"
    batch_size: int = 128
    micro_batch: int = 0              # > 0: accumulate each batch's gradient over chunks of this many
                                      # examples (same update up to summation order; see step.py)
    epochs: int = 10
    steps: int = 0                    # > 0: train for this many steps instead of epochs
    drop_last: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for field, allowed in (("activation", ACTIVATIONS), ("encoder_head", ENCODER_HEADS),
                               ("scale_param", SCALE_PARAMS), ("decoder_output", DECODER_OUTPUTS),
                               ("likelihood", LIKELIHOODS), ("kl", KL_FORMS),
                               ("reduction", REDUCTIONS), ("init", INITS),
                               ("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("binarization", BINARIZATIONS),
                               ("objective", OBJECTIVES), ("dataset", DATASETS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{self.name}: {field}={getattr(self, field)!r}, expected one of {allowed}")
        if _LIKELIHOOD_OUTPUT[self.likelihood] != self.decoder_output:
            raise ValueError(f"{self.name}: likelihood {self.likelihood} needs decoder_output "
                             f"{_LIKELIHOOD_OUTPUT[self.likelihood]!r}, got {self.decoder_output!r}")
        if self.kl == "day37" and self.scale_param != "sigma":
            raise ValueError(f"{self.name}: kl='day37' is defined on sigma, set scale_param='sigma'")
        for field in ("lr", "batch_size", "input_dim", "latent_dim", "num_samples"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{self.name}: {field} must be positive, got {getattr(self, field)}")
        for field in ("weight_decay", "lr_decay", "beta", "kl_warmup_steps", "epochs", "steps",
                      "micro_batch"):
            if getattr(self, field) < 0:
                raise ValueError(f"{self.name}: {field} must be >= 0, got {getattr(self, field)}")
        if self.objective == "iwae" and (self.kl != "analytic" or not self.likelihood.startswith("bce")):
            raise ValueError(f"{self.name}: the iwae objective needs a Bernoulli likelihood and the "
                             "analytic Gaussian KL (log-densities, not squared errors)")


def layer_specs(cfg: VAEConfig) -> list[tuple[str, str, int, int]]:
    """(module, layer, fan_in, fan_out) for every Linear/Dense, in forward order."""
    specs, width = [], cfg.input_dim
    for i, h in enumerate(cfg.encoder_hidden):
        specs.append(("encoder", f"hidden_{i}", width, h))
        width = h
    if cfg.encoder_head == "split":
        specs.append(("encoder", "head", width, 2 * cfg.latent_dim))
    else:
        specs += [("encoder", "mean", width, cfg.latent_dim),
                  ("encoder", cfg.scale_param, width, cfg.latent_dim)]
    width = cfg.latent_dim
    for i, h in enumerate(cfg.decoder_hidden):
        specs.append(("decoder", f"hidden_{i}", width, h))
        width = h
    specs.append(("decoder", "out", width, cfg.input_dim))
    return specs


def _preset_table() -> dict[str, VAEConfig]:
    wiseodd = VAEConfig(
        name="wiseodd", encoder_hidden=(128,), latent_dim=100, decoder_hidden=(128,),
        init="wiseodd", reduction="mean", batch_size=64, steps=100_000)
    minimalist = VAEConfig(
        name="minimalist", encoder_hidden=(500,), latent_dim=2, decoder_hidden=(500,),
        weight_decay=1e-5, batch_size=100, epochs=50, eval_use_mean=True)
    deep_mse = VAEConfig(
        name="deep-mse", encoder_hidden=(256, 128, 32), latent_dim=10, decoder_hidden=(32, 128, 256),
        decoder_output="identity", likelihood="mse_sum", batch_size=64, epochs=10, drop_last=True)
    day37 = VAEConfig(
        name="day37", encoder_hidden=(256, 64), latent_dim=10, decoder_hidden=(64, 256),
        activation="identity", encoder_head="split", scale_param="sigma",
        decoder_output="identity", likelihood="mse_mean", kl="day37", reduction="mean",
        batch_size=32, epochs=10)
    stutz = VAEConfig(
        name="stutz-rectangles", input_dim=576, encoder_hidden=(1152, 1152), latent_dim=2,
        decoder_hidden=(1152, 1152), init="lua", optimizer="lua_adam", lr_decay=1e-4,
        dataset="rectangles", batch_size=16, epochs=10)
    pytorch_examples = VAEConfig(name="pytorch-examples", batch_size=128, epochs=10)
    flax_examples = VAEConfig(
        name="flax-examples", encoder_hidden=(500,), decoder_hidden=(500,), decoder_output="logits",
        likelihood="bce_logits", reduction="mean", init="flax", binarization="static",
        batch_size=128, epochs=30)
    iwae_paper = VAEConfig(
        name="iwae-paper", encoder_hidden=(200, 200), latent_dim=50, decoder_hidden=(200, 200),
        activation="tanh", decoder_output="logits", likelihood="bce_logits", init="glorot",
        objective="iwae", num_samples=5, binarization="dynamic", adam_eps=1e-4, lr_schedule="iwae",
        batch_size=20, epochs=10, dataset="fashion_mnist")
    return {c.name: c for c in (wiseodd, minimalist, deep_mse, day37, stutz,
                                pytorch_examples, flax_examples, iwae_paper)}


PRESETS: dict[str, VAEConfig] = _preset_table()
PRESET_DOCS: dict[str, str] = {
    "wiseodd": "wiseodd/generative-models vanilla_vae (PyTorch). Quirks: loss is per-batch MEAN of "
               "(summed BCE + KL) (source divides by mb_size); weights ~ N(0, std=1/sqrt(fan_in/2)), "
               "zero biases; trains by 100k iterations of batch 64, not by epochs.",
    "minimalist": "Minimal 2-D latent VAE. Quirks: torch Adam weight_decay=1e-5 is coupled L2 (added "
                  "to the gradient), not AdamW; evaluation decodes z = mu (no sampling).",
    "deep-mse": "Deep MLP VAE with Gaussian-ish MSE loss. Quirks: decoder has no output activation; "
                "MSE is summed (not averaged); last incomplete batch dropped.",
    "day37": "'Day 37' VAE as printed. Quirks: no activations anywhere (a linear model); encoder "
             "emits sigma directly (split of 20 outputs, can be negative); loss = MSE mean over all "
             "elements + 0.5*sum(mu^2+sigma^2-log(1e-8+sigma^2)-1) / (number of input elements).",
    "stutz-rectangles": "David Stutz's Lua-torch VAE on 24x24 rectangles. Quirks: Lua-torch Linear "
                        "init U(+-1/sqrt(fan_in)) on weights and biases; Lua optim.adam: "
                        "lr_t = lr/(1+t*1e-4), epsilon added to sqrt(v) BEFORE bias correction; "
                        "BCE with sizeAverage=false (summed over batch).",
    "pytorch-examples": "pytorch/examples vae/main.py: BCE(sum) + KLD summed over the batch.",
    "flax-examples": "google/flax examples/vae: logits decoder, BCE-with-logits and KL each averaged "
                     "over the batch; Flax Dense default init (lecun_normal kernel, zero bias), as "
                     "its source does; trained on the (statically) binarized MNIST.",
    "iwae-paper": "Burda et al. (2016) one-stochastic-layer IWAE: 784-200-200 tanh, 50-d latent, "
                  "Bernoulli logits, Glorot init, dynamic binarization, Adam(b1=0.9, b2=0.999, eps=1e-4) "
                  "with lr 1e-3 * 10**(-i/7) for 3**i epochs (i = 0..7 in the paper), k=5, batch 20.",
}


def get_preset(name: str) -> VAEConfig:
    """Look up a preset by name, with a one-line error listing the known names."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def _parse_value(field: dataclasses.Field, raw: str) -> Any:
    hint = typing.get_type_hints(VAEConfig)[field.name]
    if hint is bool:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{field.name} expects a bool, got {raw!r}")
    if hint is int or hint is float or hint is str:
        try:
            return hint(raw)
        except ValueError:
            raise ValueError(f"{field.name} expects {hint.__name__}, got {raw!r}") from None
    if typing.get_origin(hint) is tuple:
        try:
            return tuple(int(v) for v in raw.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"{field.name} expects comma-separated ints, got {raw!r}") from None
    raise ValueError(f"{field.name}: cannot parse type {hint}")


def apply_overrides(cfg: VAEConfig, overrides: dict[str, Any]) -> VAEConfig:
    """dataclasses.replace with key and type checks; string values are parsed to the field type."""
    fields = {f.name: f for f in dataclasses.fields(VAEConfig)}
    parsed = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in fields or key == "name":
            raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(k for k in fields if k != 'name')}")
        if isinstance(value, str):
            value = _parse_value(fields[key], value)
        else:
            expected = typing.get_type_hints(VAEConfig)[key]
            base = typing.get_origin(expected) or expected
            if base is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, base) or (base is int and isinstance(value, bool)):
                raise TypeError(f"{key} expects {expected}, got {type(value).__name__}")
        parsed[key] = value
    return dataclasses.replace(cfg, **parsed)


def to_dict(cfg: VAEConfig) -> dict[str, Any]:
    """JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def from_dict(d: dict[str, Any]) -> VAEConfig:
    """Inverse of to_dict; unknown keys are an error."""
    fields = {f.name for f in dataclasses.fields(VAEConfig)}
    unknown = set(d) - fields
    if unknown:
        raise KeyError(f"unknown config keys {sorted(unknown)}")
    return VAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
