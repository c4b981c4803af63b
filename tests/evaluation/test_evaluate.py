"""IWAE-k log-likelihood estimate and test negative ELBO, JAX and torch: exact cases, quadrature,
chunking, bounded memory, the evaluation data and its binarization."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from jax_vae import evaluate as je
from jax_vae import functional
from jax_vae.common import evaluation
from jax_vae.common.config.presets import get_preset
from jax_vae.common.weights import convert
from jax_vae.linen import models
from torch_reference import evaluate as te
from torch_reference.functional import sample_eps as torch_sample_eps
from torch_reference.nn.models import VAE as TorchVAE

TINY = dataclasses.replace(
    get_preset("iwae-paper"), input_dim=6, encoder_hidden=(8,), decoder_hidden=(8,), latent_dim=2
)
FRAMEWORKS = ["jax", "torch"]


def _params(seed: int = 0, decoder_gain: float = 1.0) -> dict:
    """numpy float32 Flax params of TINY; decoder kernels scaled to sharpen the posterior."""
    params = jax.tree_util.tree_map(np.asarray, models.init_params(jax.random.key(seed), TINY))
    for leaf in params["decoder"].values():
        leaf["kernel"] = leaf["kernel"] * decoder_gain
    return params


def _stats(
    framework: str, params: dict, x: np.ndarray, k: int, batch_size: int, chunk=None, seed: int = 0
) -> dict[str, np.ndarray]:
    if framework == "jax":
        return je.per_image_stats(params, x, jax.random.key(seed), TINY, k, batch_size, chunk)
    model = TorchVAE(TINY)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in convert.flax_to_torch(params, TINY).items()})
    return te.per_image_stats(model, x, torch.Generator().manual_seed(seed), TINY, k, batch_size, chunk)


def _log_bernoulli(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """sum_d x l - log(1 + e^l) in float64: [N, D] x [..., D] -> [N, ...]."""
    return x.astype(np.float64) @ logits.T - np.logaddexp(0.0, logits).sum(-1)[None]


def _decoder_logits(params: dict, z: np.ndarray) -> np.ndarray:
    d = {k: {n: v.astype(np.float64) for n, v in leaf.items()} for k, leaf in params["decoder"].items()}
    h = np.tanh(z @ d["hidden_0"]["kernel"] + d["hidden_0"]["bias"])  # [G, H]
    return h @ d["out"]["kernel"] + d["out"]["bias"]  # [G, D]


def _binary(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(size=(n, TINY.input_dim)) < 0.5).astype(np.float32)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_exact_when_q_is_the_prior_and_p_ignores_z(framework):
    """q(z|x) = p(z) = N(0, I) and p(x|z) = p(x): every weight w = p(x), so the estimate is exact
    for any k, chunking and image batching (7 images in batches of 3, k = 37 in chunks of 10)."""
    params = _params()
    for name in ("mean", "logvar"):
        params["encoder"][name] = {key: np.zeros_like(v) for key, v in params["encoder"][name].items()}
    params["decoder"]["hidden_0"]["kernel"] = np.zeros_like(params["decoder"]["hidden_0"]["kernel"])
    params["decoder"]["hidden_0"]["bias"] = np.linspace(-1, 1, 8, dtype=np.float32)
    x = _binary(7)
    exact = _log_bernoulli(x, _decoder_logits(params, np.zeros((1, 2))))[:, 0]  # [7]
    stats = _stats(framework, params, x, k=37, batch_size=3, chunk=10)
    np.testing.assert_allclose(stats["log_px"], exact, rtol=1e-5, err_msg=f"{framework}: log_px")
    np.testing.assert_allclose(stats["recon"], -exact, rtol=1e-5, err_msg=f"{framework}: recon")
    np.testing.assert_allclose(stats["kl"], 0.0, atol=1e-6, err_msg=f"{framework}: kl")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_k5000_matches_quadrature_and_beats_the_elbo(framework):
    """2-d latent: log p(x) by quadrature on a 561^2 grid over [-7, 7]^2. The ELBO sits 2-5 nats
    below it; the k = 5000 estimate is within 0.15 nats per image (its Monte-Carlo sd is ~0.03)."""
    params, x = _params(decoder_gain=3.0), _binary(6)
    grid = np.linspace(-7.0, 7.0, 561)
    z = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)  # [G, 2]
    log_joint = _log_bernoulli(x, _decoder_logits(params, z)) - 0.5 * (z**2).sum(-1) - np.log(2 * np.pi)
    exact = logsumexp(log_joint, axis=1) + 2 * np.log(grid[1] - grid[0])  # [6]
    stats = _stats(framework, params, x, k=5000, batch_size=6)
    elbo = -(stats["recon"] + stats["kl"])
    assert np.all(exact - elbo > 1.0), f"{framework}: ELBO gap {exact - elbo} should exceed 1 nat"
    np.testing.assert_allclose(stats["log_px"], exact, atol=0.15, err_msg=f"{framework}: IWAE-5000")
    assert abs(np.mean(stats["log_px"] - exact)) < 0.06, (
        f"{framework}: mean error {np.mean(stats['log_px'] - exact)}"
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_drawing_loop_equals_injected_eps(framework):
    """The sampling loop (k = 23 in chunks of 5, last chunk of 3) equals log_likelihood_from_eps on
    the same eps, and the injected-eps result does not depend on the chunk size."""
    params, x = _params(decoder_gain=2.0), _binary(4)
    k, chunk = 23, 5
    eps: Any  # JAX or torch, by framework
    if framework == "jax":
        key = jax.random.fold_in(jax.random.key(3), 0)  # image batch 0
        eps = jnp.concatenate(
            [functional.sample_eps(jax.random.fold_in(key, i), TINY, 4, chunk) for i in range(5)]
        )[:k]  # [23, 4, 2]
        by_chunk = lambda c: np.asarray(je.log_likelihood_from_eps(params, jnp.asarray(x), eps, TINY, c))
    else:
        gen = torch.Generator().manual_seed(3)
        eps = torch.cat([torch_sample_eps(gen, TINY, 4, min(chunk, k - i * chunk)) for i in range(5)])
        model = TorchVAE(TINY)
        model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in convert.flax_to_torch(params, TINY).items()}
        )
        by_chunk = lambda c: (
            te.log_likelihood_from_eps(model, torch.from_numpy(x), eps, TINY, c).detach().numpy()
        )
    drawn = _stats(framework, params, x, k=k, batch_size=4, chunk=chunk, seed=3)["log_px"]
    np.testing.assert_allclose(drawn, by_chunk(chunk), rtol=1e-6, err_msg=f"{framework}: loop vs eps")
    for c in (1, 7, None):
        np.testing.assert_allclose(by_chunk(c), by_chunk(chunk), rtol=1e-5, err_msg=f"{framework}: chunk {c}")


def test_jax_memory_is_bounded_in_k():
    """XLA's temp buffers for one image batch do not grow with k beyond the [n_chunks, B] chunk
    results, and stay far below decoding all k samples at once."""
    cfg = dataclasses.replace(get_preset("iwae-paper"), encoder_hidden=(64,), decoder_hidden=(64,))
    params = models.init_params(jax.random.key(0), cfg)
    x, key, batch, chunk = jnp.zeros((50, 784)), jax.random.key(0), 50, 100

    def temp_bytes(k: int) -> int:
        analysis = je._batch_stats.lower(params, x, key, cfg, k, chunk).compile().memory_analysis()
        if analysis is None:
            pytest.skip("this backend reports no memory analysis")
        return analysis.temp_size_in_bytes

    small, large = temp_bytes(10 * chunk), temp_bytes(100 * chunk)  # 10 vs 100 chunks
    assert large <= small + 2 * 100 * batch * 4 + 65536, f"temp grew from {small} to {large} bytes"
    assert large < 100 * chunk * batch * 784 * 4 / 20, f"temp {large} bytes is not chunk-bounded"


def test_evaluate_summary_both_frameworks():
    """evaluate(): per-image means in nats, -ELBO >= IWAE NLL, both sides agree within MC error."""
    params, x = _params(decoder_gain=3.0), _binary(20, seed=1)
    model = TorchVAE(TINY)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in convert.flax_to_torch(params, TINY).items()})
    rj = je.evaluate(
        params,
        x,
        jax.random.key(0),
        TINY,
        k=2000,
        batch_size=8,
        binarization="dynamic (test set binarized once, seed 0)",
    )
    rt = te.evaluate(
        model,
        x,
        torch.Generator().manual_seed(0),
        TINY,
        k=2000,
        batch_size=8,
        binarization="dynamic (test set binarized once, seed 0)",
    )
    for r in (rj, rt):
        assert r["num_images"] == 20 and r["k"] == 2000 and r["units"] == "nats per image"
        assert r["neg_elbo"] > r["iwae_nll"] + 1.0, r
        assert r["neg_elbo"] == pytest.approx(r["recon"] + r["kl"], rel=1e-6)
        assert "note" not in r
    assert rj["iwae_nll"] == pytest.approx(rt["iwae_nll"], abs=0.1)
    assert rj["kl"] == pytest.approx(rt["kl"], rel=1e-5)  # analytic, no sampling
    grey = je.evaluate(params, x * 0.5, jax.random.key(0), TINY, k=10, binarization="none (grey values)")
    assert grey["note"] == evaluation.GREY_NOTE


@pytest.mark.parametrize("preset", ["deep-mse", "day37"])
def test_non_density_objectives_are_refused(preset):
    cfg = get_preset(preset)
    with pytest.raises(ValueError, match="log-densities"):
        je.log_likelihood_estimate({}, np.zeros((1, cfg.input_dim), np.float32), jax.random.key(0), cfg)
    with pytest.raises(ValueError, match="log-densities"):
        te.log_likelihood_estimate(TorchVAE(cfg), np.zeros((1, cfg.input_dim), np.float32), None, cfg)


def test_chunking():
    assert evaluation.chunking(5000, 100) == (16, 313)  # 32768 // 100 = 327 -> 16 near-equal chunks
    assert evaluation.chunking(5000, 100, chunk=5000) == (1, 5000)
    assert evaluation.chunking(10, 100, chunk=3) == (4, 3)
    assert evaluation.chunking(3, 100000) == (3, 1)
    with pytest.raises(ValueError):
        evaluation.chunking(0, 10)


def test_eval_data_rectangles_is_binary_as_is():
    cfg = dataclasses.replace(get_preset("stutz-rectangles"), binarization="none")
    x, how = evaluation.eval_data(cfg)
    assert x.shape == (10_000, 576) and set(np.unique(x)) == {0.0, 1.0}
    assert how.startswith("none")


_FASHION_TEST = pathlib.Path(os.environ.get("JAX_VAE_DATA_DIR", "/nonexistent")) / "fashion-mnist"


@pytest.mark.skipif(
    not any((_FASHION_TEST / f"t10k-images-idx3-ubyte{gz}").is_file() for gz in ("", ".gz")),
    reason="the Fashion-MNIST test images are not under $JAX_VAE_DATA_DIR/fashion-mnist (real data)",
)
def test_eval_data_dynamic_binarization_is_fixed_once():
    """iwae-paper (dynamic): the Fashion-MNIST test split binarized once with a fixed seed."""
    cfg = get_preset("iwae-paper")
    x, how = evaluation.eval_data(cfg, download=False)
    again, _ = evaluation.eval_data(cfg, download=False)
    other, _ = evaluation.eval_data(cfg, seed=1, download=False)
    grey, _ = evaluation.eval_data(dataclasses.replace(cfg, binarization="none"), download=False)
    assert x.shape == (10_000, 784) and x.dtype == np.float32 and set(np.unique(x)) == {0.0, 1.0}
    assert how == "dynamic (test set binarized once, seed 0)"
    np.testing.assert_array_equal(x, again)
    assert (x != other).mean() > 0.01
    assert abs(x.mean() - grey.mean()) < 0.01  # Bernoulli(grey) keeps the mean
