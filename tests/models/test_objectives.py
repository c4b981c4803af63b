"""The IWAE and beta objectives against independent math, on both sides: the k = 1 bound is the
Monte-Carlo ELBO with Gaussian densities written out, the bound lies between the mean and the max
log-weight, and its gradient is the self-normalized importance-weighted gradient (weights
normalized over the k samples of each image, not over the batch). The seed presets' objectives
(wiseodd's batch sums, stutz-rectangles' Lua BCE) against the sources' formulas written out."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.stats import norm

from jax_vae import losses as jl
from jax_vae.common.config.presets import get_preset
from jax_vae.common.weights import convert
from jax_vae.linen import models
from torch_reference import losses as tl
from torch_reference.nn.models import VAE as TorchVAE

CFG = dataclasses.replace(
    get_preset("iwae-paper"), input_dim=12, encoder_hidden=(16,), decoder_hidden=(16,), latent_dim=3
)
B = 5


# The IWAE objective on a Lua-BCE (probabilities) decoder: keyed on likelihood.startswith("bce").
LIKELIHOOD_VARIANTS: dict[str, dict[str, Any]] = {
    "bce_logits": {},
    "bce_lua": {"likelihood": "bce_lua", "decoder_output": "sigmoid"},
}


def _setup(num_samples: int, seed: int = 0, likelihood: str = "bce_logits"):
    cfg = dataclasses.replace(CFG, num_samples=num_samples, **LIKELIHOOD_VARIANTS[likelihood])
    params = jax.tree_util.tree_map(np.asarray, models.init_params(jax.random.key(seed), cfg))
    rng = np.random.default_rng(seed)
    x = (rng.uniform(size=(B, cfg.input_dim)) < 0.4).astype(np.float32)
    eps = rng.standard_normal((num_samples, B, cfg.latent_dim)).astype(np.float32)
    model = TorchVAE(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in convert.flax_to_torch(params, cfg).items()})
    return cfg, params, model, x, eps


def _forward(framework: str, cfg, params, model, x, eps, beta: float = 1.0):
    """(per-example loss [B], recon [L, B], mean [B, Z], std [B, Z]) as numpy, from either side."""
    loss: Any  # JAX arrays or torch tensors, by framework
    aux: Any
    recon: Any
    if framework == "jax":
        loss, aux = jl.loss_fn(params, jnp.asarray(x), jnp.asarray(eps), cfg, beta)
        out, mean, scale = typing.cast(
            Any, models.VAE(cfg).apply({"params": params}, jnp.asarray(x), jnp.asarray(eps))
        )
        recon = jl.LIKELIHOODS[cfg.likelihood](out, jnp.asarray(x))
        return [np.asarray(v, np.float64) for v in (aux["per_example"], recon, mean, jnp.exp(0.5 * scale))]
    with torch.no_grad():
        loss, aux = tl.loss_fn(model, torch.from_numpy(x), torch.from_numpy(eps), cfg, beta)
        out, mean, scale = model(torch.from_numpy(x), torch.from_numpy(eps))
        recon = tl.LIKELIHOODS[cfg.likelihood](out, torch.from_numpy(x))
        return [
            v.numpy().astype(np.float64) for v in (aux["per_example"], recon, mean, torch.exp(0.5 * scale))
        ]


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
@pytest.mark.parametrize("likelihood", list(LIKELIHOOD_VARIANTS))
def test_one_sample_bound_is_the_monte_carlo_elbo(framework, beta, likelihood):
    """k = 1: -log w = -log p(x|z) - beta (log N(z; 0, I) - log N(z; mu, sigma^2)), 2 pi included."""
    cfg, params, model, x, eps = _setup(num_samples=1, likelihood=likelihood)
    per_example, recon, mean, std = _forward(framework, cfg, params, model, x, eps, beta)
    z = mean + std * eps[0].astype(np.float64)  # [B, Z]
    log_pz = norm.logpdf(z).sum(-1)
    log_qz = norm.logpdf(z, loc=mean, scale=std).sum(-1)
    np.testing.assert_allclose(per_example, recon[0] - beta * (log_pz - log_qz), rtol=2e-6)


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("likelihood", list(LIKELIHOOD_VARIANTS))
def test_bound_between_mean_and_max_log_weight(framework, likelihood):
    """mean_k log w_k <= log mean_k w_k <= max_k log w_k, and k = 50 is tighter than the MC ELBO."""
    cfg, params, model, x, eps = _setup(num_samples=50, likelihood=likelihood)
    per_example, recon, mean, std = _forward(framework, cfg, params, model, x, eps)
    z = mean + std * eps.astype(np.float64)  # [L, B, Z]
    log_w = -recon + norm.logpdf(z).sum(-1) - norm.logpdf(z, loc=mean, scale=std).sum(-1)  # [L, B]
    bound = -per_example
    assert np.all(bound >= log_w.mean(0) + 1e-3) and np.all(bound <= log_w.max(0) + 1e-4)
    np.testing.assert_allclose(bound, np.log(np.exp(log_w - log_w.max(0)).mean(0)) + log_w.max(0), rtol=2e-6)


def test_jax_gradient_is_self_normalized_importance_weighted():
    """d/dtheta log mean_k w_k = sum_k softmax_k(log w) d log w_k (softmax over k, per image)."""
    cfg, params, _, x, eps = _setup(num_samples=8)
    x, eps = jnp.asarray(x), jnp.asarray(eps)

    def log_w(p):
        out, mean, scale = typing.cast(Any, models.VAE(cfg).apply({"params": p}, x, eps))
        return jl.log_weights(jl.LIKELIHOODS[cfg.likelihood](out, x), mean, scale, eps, cfg)  # [L, B]

    grads = jax.grad(lambda p: jl.loss_fn(p, x, eps, cfg)[0])(params)
    weighted = jax.grad(
        lambda p: -(jax.lax.stop_gradient(jax.nn.softmax(log_w(p), axis=0)) * log_w(p)).sum()
    )(params)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(weighted)):
        np.testing.assert_allclose(
            g, w, rtol=1e-4, atol=1e-5 * float(jnp.abs(w).max()), err_msg=jax.tree_util.keystr(path)
        )


def test_torch_gradient_is_self_normalized_importance_weighted():
    cfg, _, model, x, eps = _setup(num_samples=8)
    x, eps = torch.from_numpy(x), torch.from_numpy(eps)
    tl.loss_fn(model, x, eps, cfg)[0].backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    out, mean, scale = model(x, eps)
    log_w = tl.log_weights(tl.LIKELIHOODS[cfg.likelihood](out, x), mean, scale, eps, cfg)  # [L, B]
    (-(torch.softmax(log_w, dim=0).detach() * log_w).sum()).backward()
    for k, p in model.named_parameters():
        np.testing.assert_allclose(
            grads[k].numpy(), p.grad.numpy(), rtol=1e-4, atol=1e-5 * float(p.grad.abs().max()), err_msg=k
        )


def _shrunk(preset: str, **changes):
    """A seed preset on 12 pixels, 16 hidden units and 3 latents; its objective fields untouched."""
    dims = dict(input_dim=12, encoder_hidden=(16,), decoder_hidden=(16,), latent_dim=3)
    return dataclasses.replace(get_preset(preset), **{**dims, **changes})


def _source_objective(cfg, params, model, x, eps, framework: str):
    """(loss, decoder probabilities [B, D], mean [B, Z], logvar [B, Z]) from either side, float64."""
    loss: Any  # a JAX array or a torch tensor, by framework
    if framework == "jax":
        loss, _ = jl.loss_fn(params, jnp.asarray(x), jnp.asarray(eps), cfg)
        out, mean, logvar = typing.cast(
            Any, models.VAE(cfg).apply({"params": params}, jnp.asarray(x), jnp.asarray(eps))
        )
        return float(loss), *(np.asarray(v, np.float64) for v in (out[0], mean, logvar))
    with torch.no_grad():
        loss, _ = tl.loss_fn(model, torch.from_numpy(x), torch.from_numpy(eps), cfg)
        out, mean, logvar = model(torch.from_numpy(x), torch.from_numpy(eps))
        return float(loss), *(v.numpy().astype(np.float64) for v in (out[0], mean, logvar))


def _pair(cfg, seed: int = 0):
    params = jax.tree_util.tree_map(np.asarray, models.init_params(jax.random.key(seed), cfg))
    model = TorchVAE(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in convert.flax_to_torch(params, cfg).items()})
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(B, cfg.input_dim)).astype(np.float32)
    eps = rng.standard_normal((1, B, cfg.latent_dim)).astype(np.float32)
    return params, model, x, eps


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_wiseodd_objective_is_the_posts_batch_sum(framework, reduction):
    """wiseodd's post: binary_cross_entropy(X_sample, X, size_average=False) + 0.5 * sum(exp(z_var) +
    z_mu**2 - 1 - z_var), both summed over the batch; --set reduction=mean divides by mb_size."""
    assert get_preset("wiseodd").reduction == "sum"  # the post's form is the preset
    cfg = _shrunk("wiseodd", reduction=reduction)
    params, model, x, eps = _pair(cfg)
    loss, probs, mu, lv = _source_objective(cfg, params, model, x, eps, framework)
    x64 = x.astype(np.float64)
    bce = -(x64 * np.log(probs) + (1 - x64) * np.log(1 - probs)).sum()
    kl = 0.5 * (np.exp(lv) + mu**2 - 1.0 - lv).sum()
    want = bce + kl if reduction == "sum" else (bce + kl) / B
    assert loss == pytest.approx(want, rel=2e-6)
    # behaviour follows the config fields, not the preset's name
    renamed = dataclasses.replace(cfg, name="not-a-preset")
    assert _source_objective(renamed, params, model, x, eps, framework)[0] == loss


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_stutz_objective_is_the_lua_bce_criterion_sum(framework):
    """stutz-rectangles: nn.BCECriterion (sizeAverage=false) -(x log(p + 1e-12) + (1 - x)
    log(1 - p + 1e-12)) summed over pixels and batch, plus the KL summed over the batch."""
    cfg = _shrunk("stutz-rectangles")
    assert (cfg.likelihood, cfg.reduction) == ("bce_lua", "sum")
    params, model, x, eps = _pair(cfg)
    loss, probs, mu, lv = _source_objective(cfg, params, model, x, eps, framework)
    x64 = x.astype(np.float64)
    bce = -(x64 * np.log(probs + 1e-12) + (1 - x64) * np.log(1 - probs + 1e-12)).sum()
    kl = 0.5 * (np.exp(lv) + mu**2 - 1.0 - lv).sum()
    assert loss == pytest.approx(bce + kl, rel=2e-6)


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_bce_lua_float32_saturated_outputs(framework):
    """float32, as Lua-torch computes in the tensor's type: p = 0 or 1 costs -log(float32(1e-12))
    = 27.63 nats where the target disagrees (not torch's 100) and 0 where it agrees, with the
    criterion's gradient -(x - p) / ((1 - p + 1e-12)(p + 1e-12)), finite (+-1e12) at both ends."""
    p = np.array([[0.0, 0.0, 1.0, 1.0, 0.5]], np.float32)  # [1, D]
    x = np.array([[0.0, 1.0, 0.0, 1.0, 0.0]], np.float32)
    if framework == "jax":
        # jitted, as the step runs it: XLA must not fold the 1e-12 into 1 - p (log(0) at p = 1)
        value, grad = jax.jit(jax.value_and_grad(lambda q: jl.bce_lua(q, jnp.asarray(x)).sum()))(
            jnp.asarray(p)
        )
        value, grad = float(value), np.asarray(grad)
    else:
        p_t = torch.from_numpy(p).requires_grad_()
        out = tl.bce_lua(p_t, torch.from_numpy(x)).sum()
        out.backward()
        assert p_t.grad is not None
        value, grad = float(out.detach()), p_t.grad.numpy()
    eps32 = np.float32(1e-12)
    want = 2 * -np.log(eps32) + np.log(np.float32(2))  # two disagreeing ends + p = 0.5
    assert value == pytest.approx(float(want), rel=1e-6)
    assert grad.dtype == np.float32 and np.all(np.isfinite(grad))
    want_grad = np.array([0.0, -1 / eps32, 1 / eps32, 0.0, 2.0], np.float32)
    np.testing.assert_allclose(grad[0], want_grad, rtol=1e-6)
