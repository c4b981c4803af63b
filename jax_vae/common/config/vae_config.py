"""Framework-free VAE config: one frozen dataclass whose enum fields are `Literal` types.

Both `jax_vae` and `torch_reference` read these configs; nothing here imports jax or torch.
The named presets are in `jax_vae.common.config.presets`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Literal

from jax_vae.common.config.architecture import check_conv
from jax_vae.common.data.catalog import DEFAULT_TEST_FRACTION, VALID_DATASETS, Binarization, parse_dataset
from jax_vae.common.errors import DataError

Activation = Literal["relu", "tanh", "identity", "leaky_relu"]  # leaky_relu: slope 0.01 (torch's default)
Architecture = Literal["mlp", "conv"]
FinalLayer = Literal["conv_transpose", "conv"]
EncoderHead = Literal["separate", "split"]
ScaleParam = Literal["logvar", "sigma"]
DecoderOutput = Literal["sigmoid", "logits", "identity", "tanh"]
Likelihood = Literal["bce_probs", "bce_lua", "bce_logits", "mse_sum", "mse_mean"]
KLForm = Literal["analytic", "day37", "monte_carlo"]
Reduction = Literal["sum", "mean"]
Init = Literal["torch", "lua", "wiseodd", "flax", "glorot"]
LRSchedule = Literal["constant", "iwae", "exponential"]
Optimizer = Literal["adam", "lua_adam"]
Objective = Literal["elbo", "iwae"]
ManifoldGrid = Literal["quantile", "linear"]

# Which decoder output each likelihood consumes.
_LIKELIHOOD_OUTPUT: dict[str, tuple[str, ...]] = {
    "bce_probs": ("sigmoid",),
    "bce_lua": ("sigmoid",),
    "bce_logits": ("logits",),
    "mse_sum": ("identity", "tanh"),
    "mse_mean": ("identity", "tanh"),
}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """A VAE design, its objective, optimizer and data: everything a run needs."""

    name: str
    # --- architecture
    input_dim: int = 784
    image_shape: tuple[int, ...] = ()  # (H, W), H * W * image_channels = input_dim; () = square
    image_channels: int = 1  # C: an image is input_dim = H * W * C values, flattened in (H, W, C) order
    # --- convolutional architecture (arch="conv"; jax_vae.common.config.architecture builds its layers):
    # encoder: per conv_channels c, Conv2d(c, conv_kernel, conv_stride, conv_padding) [-> BatchNorm]
    # -> activation; flatten; the head (encoder_head) from the flattened map. decoder: Linear(latent ->
    # decoder_start C*H*W) [-> activation], per deconv_channels c ConvTranspose2d(c, conv_kernel,
    # conv_stride, deconv_padding, output_padding) [-> BatchNorm] -> activation, then the stride-1
    # final_layer (kernel conv_kernel, padding deconv_padding) to image_channels, then decoder_output.
    arch: Architecture = "mlp"
    conv_channels: tuple[int, ...] = ()
    conv_kernel: int = 3
    conv_stride: int = 2
    conv_padding: str = "valid"  # "valid" / "same" (TF, odd row at the bottom) or torch's int, e.g. "1"
    deconv_channels: tuple[int, ...] = ()
    deconv_padding: str = "same"  # "same" / "valid" (Keras Conv2DTranspose) or torch's int padding
    output_padding: int = 0  # torch ConvTranspose2d output_padding (integer deconv_padding only)
    decoder_start: tuple[int, ...] = ()  # (C, H, W) the decoder's first Linear is reshaped to
    decoder_start_activation: bool = True  # the activation after that Linear
    final_layer: FinalLayer = "conv_transpose"
    batch_norm: bool = False  # BatchNorm2d (torch semantics, momentum 0.1) after every hidden conv
    encoder_hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    decoder_hidden: tuple[int, ...] = (400,)
    activation: Activation = "relu"  # after every hidden layer (encoder and decoder)
    encoder_head: EncoderHead = "separate"  # separate Dense heads, or one Dense of 2*latent split in two
    scale_param: ScaleParam = "logvar"  # what the encoder's second output means: log sigma^2 or sigma
    decoder_output: DecoderOutput = "sigmoid"  # sigmoid -> probabilities, logits, identity -> real outputs
    init: Init = "torch"  # weight/bias initializer family (see jax_vae.functional.init_fns)
    # --- objective
    likelihood: Likelihood = "bce_probs"
    kl: KLForm = "analytic"  # monte_carlo: log q(z|x) - log p(z) at the sampled z (tf-cvae)
    reduction: Reduction = "sum"  # how per-example losses reduce over the batch
    objective: Objective = "elbo"  # elbo (L-sample average) or iwae (log-mean-exp over samples)
    num_samples: int = 1  # L samples of z per input
    beta: float = 1.0  # KL weight
    kl_warmup_steps: int = 0  # beta ramps linearly from 0 over this many steps (0 = off)
    eval_use_mean: bool = False  # evaluation decodes z = mu instead of a sample
    manifold_grid: ManifoldGrid = "quantile"  # 2-D latent grid: prior quantiles, or vae.lua's -0.95:0.1:0.95
    # --- optimizer
    optimizer: Optimizer = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0  # coupled L2, as torch.optim.Adam(weight_decay=...)
    lr_decay: float = 0.0  # lua_adam: lr / (1 + t * lr_decay)
    lr_schedule: LRSchedule = "constant"  # iwae: lr * 10**(-i/7) during stage i (3**i epochs each);
    # exponential: lr * lr_gamma**e during epoch e (torch ExponentialLR stepped once per epoch)
    lr_gamma: float = 0.95  # the exponential schedule's factor per epoch
    b1: float = 0.9
    b2: float = 0.999
    adam_eps: float = 1e-8
    # --- data and schedule
    dataset: str = "mnist"  # a known name (data.DATASETS), or the user's own "npz:PATH" / "folder:PATH"
    test_fraction: float = DEFAULT_TEST_FRACTION  # the user's data without a test split: held out
    binarization: Binarization = "none"  # static: a Bernoulli draw; threshold: x > 0.5; dynamic: per epoch
    resize: int = 0  # > 0: every image resized to resize x resize (PIL bilinear, data.resize), 0 = off
    batch_size: int = 128
    micro_batch: int = 0  # > 0: accumulate each batch's gradient over chunks of this many
    # examples (same update up to summation order; see step.py)
    epochs: int = 10
    steps: int = 0  # > 0: train for this many steps instead of epochs
    drop_last: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for field, allowed in enum_fields().items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{self.name}: {field}={getattr(self, field)!r}, expected one of {allowed}")
        try:
            parse_dataset(self.dataset)
        except DataError:
            raise ValueError(
                f"{self.name}: dataset={self.dataset!r}, expected one of {VALID_DATASETS}"
            ) from None
        if self.decoder_output not in _LIKELIHOOD_OUTPUT[self.likelihood]:
            raise ValueError(
                f"{self.name}: likelihood {self.likelihood} needs decoder_output "
                f"{' or '.join(map(repr, _LIKELIHOOD_OUTPUT[self.likelihood]))}, got {self.decoder_output!r}"
            )
        if self.kl == "day37" and self.scale_param != "sigma":
            raise ValueError(f"{self.name}: kl='day37' is defined on sigma, set scale_param='sigma'")
        _check_ranges(self)
        if self.objective == "iwae" and (self.kl != "analytic" or not self.likelihood.startswith("bce")):
            raise ValueError(
                f"{self.name}: the iwae objective needs a Bernoulli likelihood and the "
                "analytic Gaussian KL (log-densities, not squared errors)"
            )


SEED_LIMIT = 2**32  # seeds are 0 <= seed < 2**32: jax.random.key wraps larger ones (2**32 is seed 0)


def _check_ranges(cfg: VAEConfig) -> None:
    """Every number in the range its use accepts (ValueError naming the field otherwise)."""

    def need(ok: bool, field: str, rule: str) -> None:
        if not ok:
            raise ValueError(f"{cfg.name}: {field} must be {rule}, got {getattr(cfg, field)!r}")

    for field in ("batch_size", "input_dim", "latent_dim", "num_samples", "image_channels"):
        need(getattr(cfg, field) >= 1, field, ">= 1")
    for field in ("encoder_hidden", "decoder_hidden"):
        need(all(w >= 1 for w in getattr(cfg, field)), field, "layer widths >= 1")
    for field in ("lr", "adam_eps"):
        need(math.isfinite(getattr(cfg, field)) and getattr(cfg, field) > 0, field, "finite and > 0")
    for field in ("beta", "weight_decay", "lr_decay"):
        need(math.isfinite(getattr(cfg, field)) and getattr(cfg, field) >= 0, field, "finite and >= 0")
    for field in ("b1", "b2"):
        need(0 <= getattr(cfg, field) < 1, field, "in [0, 1)")
    need(math.isfinite(cfg.lr_gamma) and 0 < cfg.lr_gamma <= 1, "lr_gamma", "in (0, 1]")
    for field in ("kl_warmup_steps", "steps", "micro_batch", "resize"):  # steps = 0: train for `epochs`
        need(getattr(cfg, field) >= 0, field, ">= 0")
    need(cfg.epochs >= 0, "epochs", ">= 0")  # epochs = steps = 0 is a program config (no run length)
    need(cfg.micro_batch <= cfg.batch_size, "micro_batch", f"0 (off) or at most batch_size {cfg.batch_size}")
    need(0 <= cfg.seed < SEED_LIMIT, "seed", f"in [0, 2**32) = [0, {SEED_LIMIT - 1}]")
    need(0 < cfg.test_fraction < 1, "test_fraction", "in (0, 1)")  # also rejects nan
    need(
        cfg.image_shape == ()
        or (
            len(cfg.image_shape) == 2
            and min(cfg.image_shape) >= 1
            and math.prod(cfg.image_shape) * cfg.image_channels == cfg.input_dim
        ),
        "image_shape",
        f"() or (H, W) with H * W * image_channels = input_dim {cfg.input_dim}",
    )
    if cfg.arch == "conv":
        check_conv(cfg)


@functools.cache
def field_types() -> dict[str, Any]:
    """VAEConfig field name -> its resolved type hint."""
    return typing.get_type_hints(VAEConfig)


@functools.cache
def enum_fields() -> dict[str, tuple[str, ...]]:
    """Every Literal-typed field -> its allowed values (the one declaration of each enum)."""
    return {
        name: typing.get_args(hint)
        for name, hint in field_types().items()
        if typing.get_origin(hint) is Literal
    }


def layer_specs(cfg: VAEConfig) -> list[tuple[str, str, int, int]]:
    """(module, layer, fan_in, fan_out) for every Linear/Dense, in forward order."""
    specs, width = [], cfg.input_dim
    for i, h in enumerate(cfg.encoder_hidden):
        specs.append(("encoder", f"hidden_{i}", width, h))
        width = h
    if cfg.encoder_head == "split":
        specs.append(("encoder", "head", width, 2 * cfg.latent_dim))
    else:
        specs += [
            ("encoder", "mean", width, cfg.latent_dim),
            ("encoder", cfg.scale_param, width, cfg.latent_dim),
        ]
    width = cfg.latent_dim
    for i, h in enumerate(cfg.decoder_hidden):
        specs.append(("decoder", f"hidden_{i}", width, h))
        width = h
    specs.append(("decoder", "out", width, cfg.input_dim))
    return specs


def _parse_value(field: dataclasses.Field[Any], raw: str) -> Any:
    hint = field_types()[field.name]
    if hint is bool:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{field.name} expects a bool, got {raw!r}")
    if typing.get_origin(hint) is Literal:
        return raw
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
            raise KeyError(
                f"unknown config key {key!r}; valid keys: {', '.join(k for k in fields if k != 'name')}"
            )
        if isinstance(value, str):
            value = _parse_value(fields[key], value)
        else:
            expected = field_types()[key]
            base = str if typing.get_origin(expected) is Literal else typing.get_origin(expected) or expected
            if base is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, base) or (base is int and isinstance(value, bool)):
                raise TypeError(f"{key} expects {expected}, got {type(value).__name__}")
        parsed[key] = value
    return dataclasses.replace(cfg, **parsed)


def to_dict(cfg: VAEConfig) -> dict[str, Any]:
    """JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _check_type(key: str, value: Any) -> Any:
    """`value` as VAEConfig field `key` holds it (a JSON list -> tuple, an int -> float), else TypeError."""
    hint = field_types()[key]
    origin = typing.get_origin(hint)
    if origin is tuple:
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    elif origin is Literal or hint is str:
        ok = isinstance(value, str)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise TypeError(f"config field {key} expects {hint}, got {value!r}")
    return value


def from_dict(d: dict[str, Any]) -> VAEConfig:
    """Inverse of to_dict, type-checked field by field; unknown or missing keys are an error."""
    if not isinstance(d, dict):
        raise TypeError(f"a config is a JSON object, got {type(d).__name__}")
    fields = {f.name for f in dataclasses.fields(VAEConfig)}
    unknown = set(d) - fields
    if unknown:
        raise KeyError(f"unknown config keys {sorted(unknown)}")
    if "name" not in d:
        raise KeyError("config has no 'name'")
    return VAEConfig(**{k: _check_type(k, v) for k, v in d.items()})
