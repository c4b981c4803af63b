"""`python -m jax_vae evaluate` / `python -m torch_reference evaluate` on tiny trained runs
(generated rectangles, so no downloaded data is needed)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jax_vae import evaluate as je
from jax_vae.checkpoint import load_params, save_params
from jax_vae.common import cli
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import apply_overrides, to_dict
from jax_vae.common.data.datasets import make_rectangles
from jax_vae.linen.models import init_params
from tests.helpers import train_fn

TINY_RECTANGLES = apply_overrides(
    get_preset("stutz-rectangles"),
    {"encoder_hidden": (16,), "decoder_hidden": (16,), "batch_size": 8, "steps": 4},
)


def _train(framework: str, cfg, run_dir) -> None:
    x, labels = make_rectangles(64, seed=5)
    data = {"train": x, "test": x[:16], "train_labels": labels, "test_labels": labels[:16]}
    train_fn(framework)(cfg, run_dir, data=data, progress=False, images=False)


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_evaluate_command_reports_and_records(framework, tmp_path, capsys):
    run = tmp_path / "run"
    _train(framework, TINY_RECTANGLES, run)
    code = cli.main(
        ["evaluate", "--run", str(run), "--k", "20", "--num-images", "8", "--batch-size", "3"],
        framework=framework,
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"{framework} stutz-rectangles (step 4): test -ELBO" in out and "IWAE-20 NLL" in out
    record = json.loads((run / "evaluation-k20.json").read_text())
    assert record["framework"] == framework and record["step"] == 4 and record["k"] == 20
    assert record["num_images"] == 8 and record["binarization"].startswith("none")
    assert record["units"] == "nats per image" and "note" in record  # grey-free but unbinarized preset
    assert 0 < record["iwae_nll"] < record["neg_elbo"], record
    if framework == "jax":  # the same numbers, called directly
        params, _ = load_params(run)
        x, _ = make_rectangles(10_000, seed=2)
        direct = je.evaluate(params, x[:8], jax.random.key(0), TINY_RECTANGLES, k=20, batch_size=3)
        np.testing.assert_allclose(direct["iwae_nll"], record["iwae_nll"], rtol=1e-6)
        np.testing.assert_allclose(direct["neg_elbo"], record["neg_elbo"], rtol=1e-6)


def test_evaluate_command_refuses_squared_error_presets(tmp_path, capsys):
    """A params export of a deep-mse variant: an MSE 'likelihood' has no log p(x) to estimate."""
    cfg = apply_overrides(get_preset("deep-mse"), {"encoder_hidden": (8,), "decoder_hidden": (8,)})
    params = jax.tree_util.tree_map(np.asarray, init_params(jax.random.key(0), cfg))
    save_params(tmp_path / "mse", params, {"config": to_dict(cfg), "step": 0})
    assert (
        cli.main(
            ["evaluate", "--run", str(tmp_path / "mse"), "--k", "5", "--out", str(tmp_path / "r.json")],
            framework="jax",
        )
        == 2
    )
    assert "log-densities" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_evaluate_command_rejects_bad_k(tmp_path, capsys):
    assert cli.main(["evaluate", "--run", str(tmp_path), "--k", "0"], framework="jax") == 2
    assert "--k must be >= 1" in capsys.readouterr().err
