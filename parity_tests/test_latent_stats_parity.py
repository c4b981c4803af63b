"""The step's latent statistics (StepMetrics.mu_mean, logvar_std, logvar_mean) agree JAX vs torch under
shared weights and eps, whole batch and micro-batched, and equal a direct numpy computation over the
encoder outputs (logvar = log sigma^2 for scale_param="sigma" presets; std unbiased, n - 1)."""

import jax
import numpy as np
import pytest
import torch

from jax_vae import optim as jo
from jax_vae import step as js
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.linen.models import VAE as JaxVAE
from parity_tests.harness import STEPS_PER_EPOCH, make_inputs, setup_pair, variant
from parity_tests.sizes import parity_preset, unless_batch_norm
from parity_tests.tolerances import assert_close, tol
from torch_reference import optim as to
from torch_reference import step as ts

STATS = ("mu_mean", "logvar_std", "logvar_mean")
MICRO = 5  # 16 = 3 x 5 + 1: the scan over full chunks and the remainder chunk


def _direct(cfg: VAEConfig, params: dict, x: np.ndarray) -> dict[str, float]:
    """The statistics from the encoder outputs [B, Z] in float64 numpy: mean, std(ddof=1), mean."""
    mean, scale = (
        np.asarray(t, np.float64) for t in JaxVAE(cfg).apply({"params": params}, x, method="encode")
    )
    logvar = scale if cfg.scale_param == "logvar" else np.log(np.square(scale))  # [B, Z]
    return {"mu_mean": mean.mean(), "logvar_std": logvar.std(ddof=1), "logvar_mean": logvar.mean()}


@pytest.mark.parametrize("micro_batch", [0, MICRO])
def test_latent_stats_match_torch_and_a_direct_computation(preset, dtype, micro_batch):
    why = "the direct computation reads the encoder in eval mode; BatchNorm trains on batch statistics"
    cfg = variant(unless_batch_norm(parity_preset(preset), why), micro_batch=micro_batch)
    model, params = setup_pair(cfg, dtype)
    x, eps = make_inputs(cfg, dtype)
    direct = _direct(cfg, params, x)  # before the update changes the weights
    tx = jo.make_optimizer(cfg, steps_per_epoch=STEPS_PER_EPOCH)
    _, mj = jax.jit(lambda s, b, e: js.update(s, b, e, cfg, tx))(js.create_state(params, tx), x, eps)
    ttx = to.make_optimizer(cfg, steps_per_epoch=STEPS_PER_EPOCH, foreach=False, fused=False)
    _, mt = ts.update(ts.create_state(model, ttx), torch.from_numpy(x), torch.from_numpy(eps), cfg)
    t = tol(
        dtype, "latent_stats_sigma" if dtype == "float32" and cfg.scale_param == "sigma" else "latent_stats"
    )
    where = f"{preset}/{dtype}/micro_batch={micro_batch}"
    for name in STATS:
        jax_value, torch_value = np.asarray(getattr(mj, name)), getattr(mt, name).numpy()
        assert jax_value.shape == torch_value.shape == (), f"{where}/{name}: not a scalar"
        assert_close(f"{where}/{name}", jax_value, torch_value, t)
        assert_close(f"{where}/{name} vs numpy", jax_value, direct[name], t)
    assert float(mj.logvar_std) > 0, f"{where}: logvar std {float(mj.logvar_std)}"
