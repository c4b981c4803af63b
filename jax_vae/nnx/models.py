"""Flax NNX twins of the Linen VAEs in models.py: the same layers, names, initializers and math.

JAX-only (like parallel.py): the PyTorch twin mirrors models.py, whose params tree this module's
state is. Every `nnx.Linear` is an attribute named as its Linen `nn.Dense` (common.config.layer_specs),
so `nnx.to_pure_dict(nnx.state(model, nnx.Param))` is exactly the Linen params tree
{"encoder": {"hidden_0": {"kernel", "bias"}, ...}, "decoder": {...}} (kernels [in, out]); moving
weights between Linen and NNX is nnx.split / nnx.merge / nnx.update with that dict, no layout change,
and PyTorch goes through common.convert on the same tree. The loss is losses.objective on this
model's outputs (one implementation of every likelihood, KL and IWAE bound).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jax_vae.common.config.vae_config import VAEConfig, layer_specs
from jax_vae.functional import ACTIVATIONS, as_eps, init_fns, reparameterize, std_from_scale
from jax_vae.linen.models import init_variables
from jax_vae.losses import objective
from jax_vae.nnx.conv_models import ConvDecoder, ConvEncoder

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]  # (params, x, eps, cfg, beta) -> (loss, aux)


def _linear(cfg: VAEConfig, module: str, layer: str, rngs: nnx.Rngs, param_dtype: Any) -> nnx.Linear:
    """The nnx.Linear of layer_specs' (module, layer), with the preset's initializers (models.init_fns)."""
    ((fan_in, fan_out),) = [(i, o) for m, n, i, o in layer_specs(cfg) if (m, n) == (module, layer)]
    kernel_init, bias_init = init_fns(cfg.init, fan_in)
    return nnx.Linear(
        fan_in, fan_out, kernel_init=kernel_init, bias_init=bias_init, param_dtype=param_dtype, rngs=rngs
    )


def _add_layers(obj: nnx.Module, cfg: VAEConfig, module: str, rngs: nnx.Rngs, param_dtype: Any) -> None:
    """Set one nnx.Linear attribute per layer of `module`, named and ordered as layer_specs."""
    for m, layer, _, _ in layer_specs(cfg):
        if m == module:
            setattr(obj, layer, _linear(cfg, module, layer, rngs, param_dtype))


def _apply(obj: nnx.Module, layer: str, h: Array) -> Array:
    """h @ kernel + bias of the nnx.Linear attribute `layer` (names come from layer_specs)."""
    return getattr(obj, layer)(h)


class Encoder(nnx.Module):
    """q(z|x): x [B, D] -> (mean [B, Z], scale parameter [B, Z]: logvar or sigma)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32) -> None:
        self.config = cfg
        _add_layers(self, cfg, "encoder", rngs, param_dtype)

    def __call__(self, x: Array, train: bool = False) -> tuple[Array, Array]:  # train: no BatchNorm here
        cfg, act = self.config, ACTIVATIONS[self.config.activation]
        h = x
        for i in range(len(cfg.encoder_hidden)):
            h = act(_apply(self, f"hidden_{i}", h))  # [B, H_i]
        if cfg.encoder_head == "split":
            out = _apply(self, "head", h)  # [B, 2Z]
            return out[..., : cfg.latent_dim], out[..., cfg.latent_dim :]
        return _apply(self, "mean", h), _apply(self, cfg.scale_param, h)


class Decoder(nnx.Module):
    """p(x|z): z [..., Z] -> outputs [..., D] (probabilities, logits or real values)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32) -> None:
        self.config = cfg
        _add_layers(self, cfg, "decoder", rngs, param_dtype)

    def __call__(self, z: Array, train: bool = False) -> Array:  # train: no BatchNorm here
        cfg, act = self.config, ACTIVATIONS[self.config.activation]
        h = z
        for i in range(len(cfg.decoder_hidden)):
            h = act(_apply(self, f"hidden_{i}", h))  # [..., H_i]
        out = _apply(self, "out", h)  # [..., D]
        return jax.nn.sigmoid(out) if cfg.decoder_output == "sigmoid" else out


# The encoder / decoder bodies of each VAEConfig.arch: a network is a part the VAE is built from.
NETWORKS: dict[str, tuple[Callable[..., nnx.Module], Callable[..., nnx.Module]]] = {
    "mlp": (Encoder, Decoder),
    "conv": (ConvEncoder, ConvDecoder),
}


class VAE(nnx.Module):
    """Encoder + Decoder; __call__(x, eps) -> (outputs [L, B, D], mean [B, Z], scale [B, Z])."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32) -> None:
        self.config = cfg
        encoder, decoder = NETWORKS[cfg.arch]
        self.encoder: nnx.Module = encoder(cfg, rngs=rngs, param_dtype=param_dtype)
        self.decoder: nnx.Module = decoder(cfg, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x: Array, eps: Array, train: bool = False) -> tuple[Array, Array, Array]:
        mean, scale = self.encoder(x, train)  # [B, Z] x2
        z = reparameterize(mean, std_from_scale(scale, self.config.scale_param), eps)  # [L, B, Z]
        return self.decoder(z, train), mean, scale

    def encode(self, x: Array) -> tuple[Array, Array]:
        return self.encoder(x, False)

    def decode(self, z: Array) -> Array:
        return self.decoder(z, False)


def abstract_model(cfg: VAEConfig, dtype: Any = jnp.float32) -> VAE:
    """The VAE's structure with ShapeDtypeStruct leaves (nothing drawn): a template to load into."""
    return nnx.eval_shape(lambda: VAE(cfg, rngs=nnx.Rngs(0), param_dtype=dtype))


def from_linen_params(cfg: VAEConfig, params: dict, batch_stats: dict | None = None) -> VAE:
    """The NNX VAE holding `params` (the Linen tree, or anything of its structure and shapes) and a
    BatchNorm model's running statistics (the Linen 'batch_stats' collection)."""
    model = abstract_model(cfg)
    want = jax.tree_util.tree_flatten_with_path(to_linen_params(model))[0]  # [(path, ShapeDtypeStruct)]
    have = jax.tree_util.tree_flatten_with_path(params)[0]
    if [p for p, _ in want] != [p for p, _ in have]:
        raise ValueError(
            f"{cfg.name}: params keys {[jax.tree_util.keystr(p) for p, _ in have]} != "
            f"{[jax.tree_util.keystr(p) for p, _ in want]}"
        )
    for (path, w), (_, h) in zip(want, have, strict=True):
        if tuple(w.shape) != tuple(jnp.shape(h)):
            raise ValueError(
                f"{cfg.name}: {jax.tree_util.keystr(path)} has shape {jnp.shape(h)}, expected {w.shape}"
            )
    nnx.update(model, params)
    if batch_stats is not None:
        nnx.update(model, batch_stats)
    return model


def to_linen_params(model: VAE) -> dict:
    """The model's parameters as the Linen params tree (a pure dict of arrays; the same arrays)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def init_model(key: Array, cfg: VAEConfig, dtype: Any = jnp.float32) -> VAE:
    """The NNX VAE whose parameters are models.init_params(key, cfg, dtype), bit for bit.

    Drawn through the Linen init: Linen derives each layer's key from its module path, which
    nnx.Rngs' counter streams do not reproduce; `VAE(cfg, rngs=nnx.Rngs(key))` draws from the same
    initializers with NNX's own keys (same distribution, other values)."""
    variables = init_variables(key, cfg, dtype)
    return from_linen_params(cfg, variables["params"], variables.get("batch_stats"))


def loss_fn(
    model: VAE,
    x: Array,
    eps_or_key: Array,
    cfg: VAEConfig,
    beta: Array | float | None = None,
    train: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """(loss, metrics) of losses.objective on the NNX model's outputs: the same loss and per-example
    metrics [B] as losses.loss_fn on the Linen params. A BatchNorm model in `train` mode normalizes
    with the batch statistics and updates its nnx.BatchStat running ones in place."""
    eps = as_eps(eps_or_key, cfg, x.shape[0], x.dtype)  # [L, B, Z]
    outputs, mean, scale = model(x, eps, train)  # [L, B, D], [B, Z] x2
    return objective(outputs, mean, scale, x, eps, cfg, beta)


def params_loss(graphdef: nnx.GraphDef) -> LossFn:
    """loss(params, x, eps_or_key, cfg, beta, batch_stats, train) = loss_fn(nnx.merge(graphdef,
    params[, batch_stats]), ...): the NNX loss as a function of the params tree, the form
    step.value_and_grad differentiates (losses.loss_fn's signature; the updated running statistics
    of a train-mode BatchNorm model are returned as metrics['batch_stats'], as there)."""

    def loss(
        params: Any,
        x: Array,
        eps_or_key: Array,
        cfg: VAEConfig,
        beta: Array | float | None = None,
        batch_stats: Any = None,
        train: bool = True,
    ) -> tuple[Array, dict[str, Array]]:
        if batch_stats is None:
            return loss_fn(nnx.merge(graphdef, params), x, eps_or_key, cfg, beta)
        model = nnx.merge(graphdef, params, batch_stats, copy=True)  # copy: the update is traced
        value, aux = loss_fn(model, x, eps_or_key, cfg, beta, train)
        if train:  # a tree among the [B] arrays, as losses.loss_fn returns it
            aux["batch_stats"] = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))  # type: ignore[assignment]
        return value, aux

    return loss
