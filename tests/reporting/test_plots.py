"""Figures: manifold grids, pixel mapping, tiling, loss curves and their labels (compare: test_compare.py)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from jax_vae.common.config.presets import PRESETS, get_preset
from jax_vae.common.config.vae_config import to_dict
from jax_vae.common.reporting import plots
from jax_vae.common.training import inputs
from tests.helpers import tiny_config


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


def _records(epochs: int, steps_per_epoch: int = 100, log_every: int = 5) -> list[dict]:
    """Step records every `log_every` steps and one epoch record per epoch (test = train - 1)."""
    records: list[dict] = []
    for e in range(1, epochs + 1):
        for step in range((e - 1) * steps_per_epoch + log_every, e * steps_per_epoch + 1, log_every):
            records.append({"kind": "step", "step": step, "epoch": e, "loss": 50.0 + 100.0 / step})
        records.append(
            {
                "kind": "epoch",
                "epoch": e,
                "step": e * steps_per_epoch,
                "train_loss": 20.0 - e,
                "test_loss": 19.0 - e,
                "test_recon": 7.5,
                "test_kl": 10.5 - e,
            }
        )
    return records


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _xy(line) -> tuple[list[float], list[float]]:
    """A drawn line's points as lists."""
    return np.asarray(line.get_xdata()).tolist(), np.asarray(line.get_ydata()).tolist()


def test_one_epoch_curves_label_their_values(tmp_path):
    cfg = to_dict(get_preset("stutz-rectangles"))
    fig = plots.curves_figure(_records(1), "t", cfg)
    steps, epochs = fig.axes
    assert steps.get_ylabel() == "train -ELBO (nats/image)" and epochs.get_ylabel() == "-ELBO (nats/image)"
    lines = {line.get_label(): line for line in steps.lines}
    train = lines["train (logged steps)"]
    assert len(_xy(train)[0]) == 20 and train.get_marker() == "o"  # few points: marked
    assert _xy(lines["test (epoch end)"]) == ([100], [18.0])
    lo, hi = steps.get_ylim()
    assert lo < 18.0 < hi  # the test point is in view
    per_epoch = {line.get_label(): _xy(line)[1] for line in epochs.lines}
    assert per_epoch == {"train loss": [19.0], "test loss": [18.0]}
    texts = _texts(epochs)
    assert "19.00" in texts and "18.00" in texts  # each point carries its value
    note = next(t for t in texts if t.startswith("one epoch"))
    assert "step 100" in note and "test recon 7.50, test KL 9.50" in note
    assert epochs.get_xlim() == (0.5, 1.5) and list(epochs.get_xticks()) == [1]
    lo, hi = epochs.get_ylim()
    assert lo < 18.0 and hi > 19.0
    path = plots.save_curves(tmp_path / "curves.png", _records(1), "t", cfg)
    assert path.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_many_epoch_curves_join_their_points():
    fig = plots.curves_figure(
        _records(4, steps_per_epoch=2000, log_every=10), "t", to_dict(get_preset("deep-mse"))
    )
    steps, epochs = fig.axes
    assert {line.get_label() for line in steps.lines} == {
        "train (logged steps)",
        "smoothed (16 points)",
        "test (epoch end)",
    }
    for line in epochs.lines:
        assert (
            _xy(line)[0] == [1, 2, 3, 4] and line.get_linestyle() == "-" and line.get_marker() in ("o", "s")
        )
    assert epochs.get_ylabel() == "mse_sum+KL (per image, not nats)"
    assert not any(t.startswith("one epoch") for t in _texts(epochs)) and "15.00" in _texts(epochs)


def test_curves_before_the_first_epoch():
    fig = plots.curves_figure([{"kind": "step", "step": s, "loss": 3.0 - s} for s in (1, 2)], "t")
    steps, epochs = fig.axes
    assert not epochs.lines and _texts(epochs) == ["no finished epoch yet"]
    assert _xy(steps.lines[0])[0] == [1, 2] and len(steps.lines) == 1  # no 1-point "smoothing"


def test_loss_labels_follow_the_config_fields():
    assert plots.loss_label(to_dict(get_preset("iwae-paper"))) == ("-IWAE-5 bound", "nats/image")
    assert plots.loss_label({"objective": "iwae", "num_samples": 50, "likelihood": "bce_logits"})[0] == (
        "-IWAE-50 bound"
    )
    assert plots.loss_label({"objective": "elbo", "likelihood": "mse_mean"}) == (
        "mse_mean+KL",
        "per image, not nats",
    )
    assert plots.train_loss_label({"likelihood": "bce_probs", "beta": 4.0}) == (
        "train -ELBO, KL weight 4 (nats/image)"
    )
    assert plots.train_loss_label({"likelihood": "bce_probs", "kl_warmup_steps": 100}) == (
        "train -ELBO, KL weight 1 after 100-step warm-up (nats/image)"
    )
    for name in PRESETS:  # the unit agrees with the one the trainer reports
        cfg = get_preset(name)
        unit = plots.loss_label(to_dict(cfg))[1]
        assert (unit == "nats/image") == (inputs.loss_unit(cfg) == "nats/image"), name


@pytest.mark.parametrize("suffix", ["png", "pdf", "svg"])
def test_figures_are_written_in_the_format_of_their_extension(tmp_path, suffix):
    path = plots.save_curves(tmp_path / f"c.{suffix}", _records(2), "t")
    magic = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xm"}[suffix]
    assert path.read_bytes()[:4] == magic
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"c.{suffix}"]  # no temp file left
