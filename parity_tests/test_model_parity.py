"""Top of the stack, per preset, dtype and JAX model API (Linen, NNX): encoder, decoder, every loss
term, total loss and every gradient tensor agree under shared weights (through the converter) and
injected eps."""

import pytest

from jax_vae.common.config.vae_config import layer_specs
from jax_vae.common.weights import convert
from parity_tests.harness import forward_pair
from parity_tests.sizes import parity_preset
from parity_tests.tolerances import assert_close, assert_near_zero, pre_batchnorm_biases, tol


def _pairs(preset: str, dtype: str, api: str):
    return forward_pair(parity_preset(preset), dtype, api)  # cached: one run per preset, dtype and API


@pytest.mark.parametrize("part", ["encoder.mean", "encoder.scale", "decoder.outputs"])
def test_forward(preset, dtype, api, part):
    jax_value, torch_value = _pairs(preset, dtype, api)[part]
    t = tol(dtype, "forward", parity_preset(preset))
    assert_close(f"{preset}/{dtype}/{api}/{part}", jax_value, torch_value, t)


@pytest.mark.parametrize("term", ["loss.recon", "loss.kl", "loss.per_example"])
def test_loss_terms(preset, dtype, api, term):
    jax_value, torch_value = _pairs(preset, dtype, api)[term]
    assert_close(f"{preset}/{dtype}/{api}/{term}", jax_value, torch_value, tol(dtype, "loss_terms"))


def test_total_loss(preset, dtype, api):
    jax_value, torch_value = _pairs(preset, dtype, api)["loss"]
    assert_close(f"{preset}/{dtype}/{api}/loss", jax_value, torch_value, tol(dtype, "loss"))


def test_every_gradient(preset, dtype, api):
    grads = {k: v for k, v in _pairs(preset, dtype, api).items() if k.startswith("grad.")}
    cfg = parity_preset(preset)
    layers = len(convert.conv_specs(cfg)) if cfg.arch == "conv" else len(layer_specs(cfg))
    assert len(grads) == 2 * layers  # a weight and a bias (BatchNorm: scale and bias) per layer
    near_zero = {f"grad.{b}" for b in pre_batchnorm_biases(cfg)}
    for name, (jax_value, torch_value) in grads.items():
        where = f"{preset}/{dtype}/{api}/{name}"
        if name in near_zero:  # exact gradient 0: both sides near 0 against the kernel's scale
            kernel = grads[name.replace(".bias", ".kernel")][1]
            t = tol(dtype, "pre_batchnorm_bias_grad")
            assert_near_zero(where, jax_value, torch_value, float(abs(kernel).max()), t)
            continue
        assert abs(torch_value).max() > 0, f"{preset}/{name}: torch gradient is all zero"
        assert_close(where, jax_value, torch_value, tol(dtype, "grad", cfg))
