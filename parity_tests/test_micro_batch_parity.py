"""Gradient accumulation (cfg.micro_batch): a batch of 16 run as chunks of 5 + 5 + 5 + 1 gives the
whole-batch loss and gradients on each side, matches the other framework, and trains the same."""

import pytest

from jax_vae.common.config.presets import PRESETS
from parity_tests.harness import BATCH, forward_pair, trajectory_pair, variant
from parity_tests.sizes import parity_preset, unless_batch_norm
from parity_tests.tolerances import CHAOTIC, assert_close, tol

MICRO = 5  # 16 = 3 x 5 + 1: the scan over full chunks and the remainder chunk
assert BATCH % MICRO != 0

KIND = {"loss": "loss", "loss.recon": "loss_terms", "loss.kl": "loss_terms", "loss.per_example": "loss_terms"}


def _kind(name: str, dtype: str = "float64") -> str | None:
    """Tolerance kind of a forward_pair entry that the objective's gradient path produces."""
    if name.startswith("grad."):
        return "accumulated_grad" if dtype == "float32" else "grad"
    return KIND.get(name)


def test_micro_batch_matches_torch(preset, dtype, api):
    cfg = unless_batch_norm(
        parity_preset(preset),
        "micro-batches would normalize each chunk with its own statistics: refused for BatchNorm",
    )
    out = forward_pair(variant(cfg, micro_batch=MICRO), dtype, api)
    for name, (jax_value, torch_value) in out.items():
        if kind := _kind(name, dtype):
            where = f"{preset}/{dtype}/{api}/micro_batch={MICRO}/{name}"
            assert_close(where, jax_value, torch_value, tol(dtype, kind))


@pytest.mark.parametrize("side", ["jax", "torch"])
def test_micro_batch_equals_whole_batch(preset, side):
    """Same framework, chunked vs one pass: only the summation order of the batch sum differs."""
    i = 0 if side == "jax" else 1
    cfg = unless_batch_norm(
        parity_preset(preset),
        "micro-batches would normalize each chunk with its own statistics: refused for BatchNorm",
    )
    whole = forward_pair(cfg, "float64")
    chunked = forward_pair(variant(cfg, micro_batch=MICRO), "float64")
    for name in whole:
        if kind := _kind(name):
            assert_close(
                f"{preset}/{side}/float64/micro_batch={MICRO} vs whole/{name}",
                chunked[name][i],
                whole[name][i],
                tol("float64", kind),
            )


# One config per way chunks combine: sum reduction, mean reduction (w = 1/B: wiseodd's
# --set reduction=mean), IWAE with L = 5. The single-step tests above cover every preset; the
# optimizer does not see the chunking.
TRAJECTORY_CONFIGS = {
    "pytorch-examples": PRESETS["pytorch-examples"],
    "wiseodd+reduction=mean": variant(PRESETS["wiseodd"], reduction="mean"),
    "iwae-paper": PRESETS["iwae-paper"],
}
assert {cfg.reduction for cfg in TRAJECTORY_CONFIGS.values()} == {"sum", "mean"}
assert not any((cfg.name, "float64") in CHAOTIC for cfg in TRAJECTORY_CONFIGS.values())


@pytest.mark.parametrize("name", list(TRAJECTORY_CONFIGS))
def test_micro_batch_float64_trajectory(name, api):
    """100 accumulated-gradient Adam steps: every parameter agrees across frameworks."""
    cfg = TRAJECTORY_CONFIGS[name]
    out = trajectory_pair(variant(cfg, micro_batch=MICRO), "float64", steps=100, api=api)
    where = f"{name}/float64/{api}/micro_batch={MICRO}"
    assert_close(f"{where}/losses", *out["losses"], tol("float64", "loss"))
    for key, (jax_value, torch_value) in out.items():
        if key.startswith("param."):
            assert_close(
                f"{where}/{key}",
                jax_value,
                torch_value,
                tol("float64", "trajectory_params"),
            )
