"""IWAE-k log-likelihood estimate, IWAE / beta / KL warm-up objectives and their gradients:
JAX vs PyTorch under shared weights (the converter) and the same injected eps, float64 and float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jax_vae import evaluate as je
from jax_vae import step as js
from jax_vae.common.config.presets import get_preset
from jax_vae.common.weights import convert
from parity_tests.harness import forward_pair, make_inputs, setup_pair, trajectory_pair, variant
from parity_tests.tolerances import assert_close, tol
from torch_reference import evaluate as te
from torch_reference import step as ts

IWAE = get_preset("iwae-paper")  # 784-200-200 tanh, 50-d latent, Bernoulli logits, k = 5


def _flat(tree: dict) -> dict[str, np.ndarray]:
    return {
        f"{m}.{layer}.{kind}": np.asarray(v)
        for m, layers in tree.items()
        for layer, leaves in layers.items()
        for kind, v in leaves.items()
    }


def _torch_grads(model: torch.nn.Module, cfg) -> dict[str, np.ndarray]:
    """The model's .grad in Flax layout (through the converter), then flattened."""
    return _flat(convert.torch_to_flax({k: p.grad for k, p in model.named_parameters()}, cfg))


def _assert_grads(name: str, grads_jax: dict, model: torch.nn.Module, cfg, dtype: str) -> None:
    gj, gt = _flat(grads_jax), _torch_grads(model, cfg)
    for key in gt:
        assert_close(f"{name}/{dtype}/grad.{key}", gj[key], gt[key], tol(dtype, "grad"))


def test_log_likelihood_estimate_and_grads(dtype, chunk=30):
    """log (1/K) sum_k w_k over K = 100 injected samples in chunks of 30 (30+30+30+10, the last
    one padded and masked on the JAX side)."""
    cfg = IWAE
    model, params = setup_pair(cfg, dtype)
    x, eps = make_inputs(cfg, dtype, num_samples=100)  # [16, 784], [100, 16, 50]
    # --- JAX half
    fn = lambda p: je.log_likelihood_from_eps(p, jnp.asarray(x), jnp.asarray(eps), cfg, chunk)
    log_px_j, vjp = jax.vjp(fn, params)
    (grads_j,) = vjp(jnp.ones_like(log_px_j))  # d sum_b log p(x_b)
    # --- torch half
    log_px_t = te.log_likelihood_from_eps(model, torch.from_numpy(x), torch.from_numpy(eps), cfg, chunk)
    log_px_t.sum().backward()
    name = f"log_px_k100_chunk{chunk}"
    assert np.all(np.asarray(log_px_j) < 0), f"{name}: log p(x) of binary images must be negative"
    assert_close(f"{name}/{dtype}", log_px_j, log_px_t.detach().numpy(), tol(dtype, "loss"))
    _assert_grads(name, grads_j, model, cfg, dtype)


def _assert_objective(name: str, cfg, dtype: str, api: str, terms: tuple[str, ...] = ("loss",)) -> None:
    """The harness's shared-weights loss and gradients of `cfg`: `terms` and every gradient agree."""
    out = forward_pair(cfg, dtype, api)
    for term in terms:
        assert_close(f"{name}/{dtype}/{api}/{term}", *out[term], tol(dtype, "loss"))
    for key, (jax_value, torch_value) in out.items():
        if key.startswith("grad."):
            assert_close(f"{name}/{dtype}/{api}/{key}", jax_value, torch_value, tol(dtype, "grad"))


def test_iwae_objective_and_grads(dtype, api, num_samples=50):
    """-log (1/k) sum_k w_k summed over the batch, k = 50 (the preset's k = 5 is in the model suite)."""
    _assert_objective(
        f"iwae_k{num_samples}",
        variant(IWAE, num_samples=num_samples),
        dtype,
        api,
        terms=("loss", "loss.per_example"),
    )


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_beta_objective_and_grads(dtype, api, objective):
    """beta = 0.25: recon + beta KL (elbo), and log-weights with beta (log p(z) - log q(z|x)) (iwae)."""
    _assert_objective(f"beta0.25_{objective}", variant(IWAE, objective=objective, beta=0.25), dtype, api)


def test_kl_warmup_weights():
    """beta_t = beta min(1, (t + 1) / warmup) at every step of the ramp and after it."""
    cfg = variant(IWAE, beta=0.5, kl_warmup_steps=7)
    steps = np.arange(12)
    jax_w = np.array([float(js.kl_weight(cfg, jnp.asarray(t, jnp.int32))) for t in steps])
    torch_w = np.array([ts.kl_weight(cfg, int(t)) for t in steps])
    exact = 0.5 * np.minimum(1.0, (steps + 1) / 7)
    assert_close("kl_weight/torch_vs_exact", torch_w, exact, tol("float64", "loss"))
    assert_close("kl_weight", jax_w, torch_w, tol("float64", "loss"))  # float64 under x64, not float32


def test_warmup_trajectory(dtype, api):
    """50 Adam steps on the ELBO with KL warm-up over 30 steps to beta 0.5: each step reads its
    weight from the step count (the IWAE objective takes beta through the same argument)."""
    cfg = variant(IWAE, objective="elbo", beta=0.5, kl_warmup_steps=30)
    out = trajectory_pair(cfg, dtype, steps=50, api=api)
    name = f"warmup_elbo/{dtype}/{api}"
    if dtype == "float64":
        assert_close(f"{name}/losses", *out["losses"], tol("float64", "loss"))
        for key, (jax_value, torch_value) in out.items():
            if key.startswith("param."):
                assert_close(f"{name}/{key}", jax_value, torch_value, tol("float64", "trajectory_params"))
    else:
        assert_close(f"{name}/losses", *out["losses"], tol("float32", "trajectory_loss"))
