"""Parity runs pin JAX to float64-capable, full-precision matmuls before any array exists.

Run this suite in its own pytest process (`make test` does): x64 is process-global.
"""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402
import torch  # noqa: E402

from jax_vae.common.config.presets import PRESETS  # noqa: E402

PRESET_NAMES = list(PRESETS)


@pytest.fixture(autouse=True)
def _torch_determinism():
    """Same torch threads and no TF32 for every parity test."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield


def pytest_generate_tests(metafunc):
    if "preset" in metafunc.fixturenames:
        metafunc.parametrize("preset", PRESET_NAMES)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", ["float64", "float32"])
    if "api" in metafunc.fixturenames:  # the JAX half's model API: Linen or NNX (harness.APIS)
        metafunc.parametrize("api", ["linen", "nnx"])
