"""The real samplers, tested statistically (RNG streams cannot match across frameworks):
eps passes a KS test against N(0, 1); z = mu + scale * eps has mean mu and std scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats

from jax_vae import functional as jf
from jax_vae.common.config.presets import PRESETS
from torch_reference import functional as tf

CFG = PRESETS["pytorch-examples"]  # latent 20
ALPHA = 1e-3  # false-failure rate per KS test (seeds are fixed anyway)


def test_jax_eps_is_standard_normal(dtype):
    eps = np.asarray(jf.sample_eps(jax.random.key(42), CFG, 1000, num_samples=5, dtype=jnp.dtype(dtype)))
    assert eps.shape == (5, 1000, 20) and eps.dtype == np.dtype(dtype)
    assert stats.kstest(eps.ravel(), "norm").pvalue > ALPHA
    assert abs(eps.mean()) < 5 / np.sqrt(eps.size) and abs(eps.std() - 1) < 0.01


def test_jax_eps_keys_are_independent():
    a = np.asarray(jf.sample_eps(jax.random.key(0), CFG, 500))
    b = np.asarray(jf.sample_eps(jax.random.fold_in(jax.random.key(0), 1), CFG, 500))
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(a.size)
    assert stats.ks_2samp(a.ravel(), b.ravel()).pvalue > ALPHA


def test_torch_eps_is_standard_normal():
    eps = tf.sample_eps(torch.Generator().manual_seed(42), CFG, 1000, num_samples=5).numpy()
    assert stats.kstest(eps.ravel(), "norm").pvalue > ALPHA


@pytest.mark.parametrize("scale_param", ["logvar", "sigma"])
def test_z_moments(scale_param):
    """z = mu + std * eps over 20,000 draws: mean mu (4 standard errors), std within 2%."""
    mean = jnp.array([[-2.0, 0.0, 3.0]])
    scale = (
        jnp.array([[np.log(0.25), 0.0, np.log(4.0)]])
        if scale_param == "logvar"
        else jnp.array([[0.5, 1.0, 2.0]])
    )
    std_expected = np.array([0.5, 1.0, 2.0])
    eps = jax.random.normal(jax.random.key(7), (20_000, 1, 3))
    z = np.asarray(jf.reparameterize(mean, jf.std_from_scale(scale, scale_param), eps))[:, 0]
    assert np.all(np.abs(z.mean(0) - np.asarray(mean)[0]) < 4 * std_expected / np.sqrt(20_000))
    assert np.allclose(z.std(0), std_expected, rtol=0.02)
    for d in range(3):
        standard = (z[:, d] - float(mean[0, d])) / std_expected[d]  # (scipy 1.18 fails on kstest's args)
        assert stats.kstest(standard, "norm").pvalue > ALPHA
