"""Figures and `compare`: the manifold grids, pixel mapping, tiling, and the overlay of run folders."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from jax_vae.common import cli as cli_module
from jax_vae.common import plots
from jax_vae.common.compare import compare
from jax_vae.common.config import to_dict
from jax_vae.common.presets import get_preset

from train_helpers import tiny_config


def test_stutz_manifold_is_the_sources_grid():
    axis = plots.manifold_axis(get_preset("stutz-rectangles"))
    np.testing.assert_allclose(axis, np.round(np.arange(-0.95, 0.951, 0.1), 2), atol=1e-12)
    assert len(axis) == 20 and axis[0] == pytest.approx(-0.95) and axis[-1] == pytest.approx(0.95)
    codes = plots.manifold_codes(axis)  # row-major, top row = largest z2
    assert codes.shape == (400, 2)
    assert codes[0].tolist() == pytest.approx([-0.95, 0.95]) and codes[19].tolist() == pytest.approx(
        [0.95, 0.95]
    )
    assert codes[-1].tolist() == pytest.approx([0.95, -0.95])


def test_other_2d_presets_use_normal_quantiles():
    axis = plots.manifold_axis(get_preset("minimalist"))
    assert (
        axis[0] == pytest.approx(statistics.NormalDist().inv_cdf(0.05)) == pytest.approx(-1.6448536, abs=1e-6)
    )
    np.testing.assert_allclose(axis, -axis[::-1], atol=1e-12)


def test_pixels_and_tiles():
    cfg = get_preset("flax-examples")  # logits decoder
    np.testing.assert_allclose(
        plots.to_pixels(np.array([[0.0, 100.0, -100.0]]), cfg), [[0.5, 1.0, 0.0]], atol=1e-12
    )
    mse = get_preset("deep-mse")  # real outputs are clipped
    assert plots.to_pixels(np.array([[-0.5, 0.25, 7.0]]), mse).tolist() == [[0.0, 0.25, 1.0]]
    images = np.arange(6 * 4, dtype=float).reshape(6, 4) / 24  # six 2x2 images
    canvas = plots.tile(images, 2, 3, (2, 2), pad=1)
    assert canvas.shape == (2 * 3 + 1, 3 * 3 + 1)
    np.testing.assert_array_equal(canvas[4:6, 7:9], images[5].reshape(2, 2))  # row 1, column 2
    assert canvas[0, 0] == 0.5


def test_write_images_draws_what_the_decoder_returns(tmp_path):
    cfg = tiny_config(latent_dim=2)
    seen: dict[str, list[np.ndarray]] = {}

    def decode(z):
        seen.setdefault("codes", []).append(z)
        return np.tile(1 / (1 + np.exp(-z[:, :1])), (1, 64))  # [N, 64]

    paths = plots.write_images(
        tmp_path,
        cfg,
        decode,
        lambda x: x,
        np.zeros((20, 64), np.float32),
        [{"kind": "step", "step": 1, "loss": 3.0}],
        "t",
    )
    assert sorted(p.name for p in paths) == [
        "curves.png",
        "manifold.png",
        "reconstructions.png",
        "samples.png",
    ]
    assert seen["codes"][0].shape == (64, 2) and seen["codes"][1].shape == (400, 2)
    np.testing.assert_array_equal(seen["codes"][0], plots.prior_codes(cfg))  # same codes for every run


def _fake_run(path, framework, seed, losses):
    path.mkdir()
    cfg = tiny_config(seed=seed)
    (path / "config.json").write_text(
        json.dumps({"framework": framework, "preset": cfg.name, "config": to_dict(cfg)})
    )
    records = [
        {"kind": "step", "step": e * 10 + 5, "epoch": e + 1, "loss": v + 1} for e, v in enumerate(losses)
    ]
    records += [
        {
            "kind": "epoch",
            "epoch": e + 1,
            "step": (e + 1) * 10,
            "train_loss": v + 1,
            "test_loss": v,
            "wall_s": e + 1.0,
        }
        for e, v in enumerate(losses)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_compare_overlays_runs_and_reports_means(tmp_path, capsys):
    runs = [
        _fake_run(tmp_path / "j0", "jax", 0, [110, 105]),
        _fake_run(tmp_path / "j1", "jax", 1, [111, 106]),
        _fake_run(tmp_path / "t0", "torch", 0, [112, 107]),
        _fake_run(tmp_path / "t1", "torch", 1, [113, 108]),
    ]
    text = compare(runs, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "mean jax: test loss 105.500 +- 0.707" in text and "mean torch: test loss 107.500 +- 0.707" in text
    assert "difference of means (jax - torch): -2.000" in text
    assert (
        cli_module.main(
            ["compare", *map(str, runs[::2]), "--labels", "JAX", "PyTorch", "--out", str(tmp_path / "d.png")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "JAX" in out and "105.000" in out and math.isfinite(float(out.split("PyTorch")[1].split()[2]))
