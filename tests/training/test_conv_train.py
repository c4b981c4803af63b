"""The conv presets (tf-cvae, antixk-vanilla) trained from both CLIs on generated images, at tiny sizes
that keep every semantic field (padding forms, output_padding, BatchNorm, activation, final layer,
loss, KL form, optimizer, schedule, binarization): the run folder, BatchNorm running statistics in the
checkpoints, bit-identical resume, an NNX run equal to the Linen one, evaluate (IWAE-k on tf-cvae,
antixk's MSE refused), export both ways with decoder parity, and the non-finite stop."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jax_vae.common import cli as cli_module
from jax_vae.common.config.vae_config import VAEConfig, from_dict
from jax_vae.common.data.datasets import load_dataset
from jax_vae.common.errors import NonFiniteLossError
from jax_vae.common.training import plan
from tests.helpers import (
    FRAMEWORKS,
    assert_bit_identical,
    assert_one_line_error,
    load_params,
    metric_records,
    run_main,
    train_fn,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRESETS = ("tf-cvae", "antixk-vanilla")
N_TRAIN, N_TEST, BATCH, STEPS, EVERY = 48, 16, 8, 12, 3  # 6 steps/epoch: 2 epochs, chunks of 3 steps
# 8x8 grey images (antixk: 6x6 files resized to 8x8); the layers shrunk, their kinds kept.
# tf-cvae: 8 -valid-> 3 -> 1 (2, 4 channels) | 4x2x2 -same,s2-> 4 -> 8 (4, 2) -> ConvTranspose s1 -> 1.
# antixk: 8 -p1-> 4 -> 2 (2, 4) | 4x2x2 -p1,op1-> 4 -> 8 (2, 2: the final c -> c deconv) -> Conv -> Tanh.
# The config is checked before the data are read, so the image size is given with the layers.
SIZE = ["input_dim=64", "image_shape=8,8"]
SETS = {
    "tf-cvae": ["conv_channels=2,4", "deconv_channels=4,2", "decoder_start=4,2,2", *SIZE],
    "antixk-vanilla": [
        *SIZE,
        "conv_channels=2,4",
        "deconv_channels=2,2",
        "decoder_start=4,2,2",
        "latent_dim=3",
        "resize=8",
    ],
}
FILE_SIDE = {"tf-cvae": 8, "antixk-vanilla": 6}


def _args(preset: str, npz: Path, out: Path, *extra: str) -> list[str]:
    sets = [a for s in SETS[preset] for a in ("--set", s)]
    return [
        "train", "--preset", preset, "--dataset", f"npz:{npz}", "--steps", str(STEPS),
        "--batch-size", str(BATCH), "--checkpoint-every", str(EVERY), "--log-every", "1",
        "--no-progress", "--no-download", "--out", str(out), *sets, *extra,
    ]  # fmt: skip


def _npz(path: Path, side: int) -> Path:
    """Smooth random uint8 images (blobs), so a threshold and a resize keep some structure."""
    rng = np.random.default_rng(side)
    yy, xx = np.mgrid[:side, :side] / side
    centres = rng.random((N_TRAIN + N_TEST, 2, 1, 1))
    x = np.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) * 8)  # [N, side, side]
    x = (255 * x).astype(np.uint8)
    np.savez(path, x_train=x[:N_TRAIN], x_test=x[N_TRAIN:])
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):  # noqa: F811 (a fixture: threads pinned first)
    """{(preset, framework): run folder} of one 12-step CLI run each, images on."""
    root = tmp_path_factory.mktemp("conv")
    out = {}
    for preset in PRESETS:
        npz = _npz(root / f"{preset}.npz", FILE_SIDE[preset])
        for fw in FRAMEWORKS:
            out[preset, fw] = root / f"{preset}-{fw}"
            assert cli_module.main(_args(preset, npz, out[preset, fw]), framework=fw) == 0
    return out


def _config(run_dir: Path) -> VAEConfig:
    return from_dict(json.loads((run_dir / "config.json").read_text())["config"])


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _canvas_png(rows: int, cols: int, side: int = 8) -> tuple[int, int]:
    """plots._save_canvas's PNG size for rows x cols tiles of side x side (1 px grey padding), unlabelled."""
    h, w = rows * (side + 1) + 1, cols * (side + 1) + 1
    zoom = max(1, round(800 / w))
    return w * zoom + 16, h * zoom + 50


# ------------------------------------------------------------------------------------- the run folder
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("preset", PRESETS)
def test_cli_run_writes_metrics_checkpoints_and_images(runs, preset, framework):
    run_dir = runs[preset, framework]
    cfg = _config(run_dir)
    assert cfg.name == preset and cfg.input_dim == 64 and cfg.image_shape == (8, 8) and cfg.arch == "conv"
    records = metric_records(run_dir)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1)) and [r["step"] for r in epochs] == [6, 12]
    assert all(np.isfinite(r["loss"]) for r in steps)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert np.isfinite(summary["test_loss"]) and summary["test_loss"] == epochs[-1]["test_loss"]
    assert summary["loss_unit"] == (
        "nats/image" if preset == "tf-cvae" else "mse_mean+KL per image (not nats)"
    )
    ckpts = run_dir / "checkpoints"
    if framework == "jax":
        from jax_vae.checkpoint import Checkpoints
    else:
        from torch_reference.checkpoint import Checkpoints  # type: ignore[assignment]
    assert Checkpoints(ckpts).all_steps() == [6, 9, 12]  # every 3 and the epoch ends, last 3 kept
    sizes = {p.name: _png_size(p) for p in (run_dir / "images").iterdir()}
    expected = {"reconstructions.png": _canvas_png(4, 8), "samples.png": _canvas_png(8, 8)}
    assert {k: sizes[k] for k in expected} == expected
    assert set(sizes) == {*expected, "curves.png"} | ({"manifold.png"} if cfg.latent_dim == 2 else set())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_batch_norm_running_statistics_train_and_are_checkpointed(runs, framework):
    """antixk's BatchNorm: the running mean / variance of every norm layer moved from (0, 1) and differ
    between the step-6 and step-12 checkpoints; torch counts the batches."""
    run_dir = runs["antixk-vanilla", framework]
    final, _ = load_params(framework, run_dir)
    middle, _ = load_params(framework, run_dir, step=6)
    if framework == "jax":
        means = [k for k in final if "batch_stats" in k and k.endswith("['mean']")]
        pairs = [(k, k.replace("['mean']", "['var']")) for k in means]
    else:
        means = [k for k in final if k.endswith("running_mean")]
        pairs = [(k, k.replace("running_mean", "running_var")) for k in means]
        assert all(int(final[k.replace("running_mean", "num_batches_tracked")]) == STEPS for k in means)
    assert len(pairs) == 4  # encoder.norm_0/1, decoder.norm_0/1
    for mean, var in pairs:
        assert not np.allclose(final[mean], 0) and not np.allclose(final[var], 1), mean
        assert not np.array_equal(final[mean], middle[mean]) and not np.array_equal(final[var], middle[var])
        assert np.all(final[var] > 0)


# ------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("preset", PRESETS)
def test_resume_from_a_mid_epoch_checkpoint_is_bit_identical(runs, tmp_path, preset, framework):
    """3 steps, stop, --resume to 12 == the 12 straight steps: weights (BatchNorm statistics included),
    every step and epoch record, the test loss. (Linen only: an NNX run compiles its own programs,
    ~14 s more on the 2-core box; tests/training/test_nnx_train.py resumes NNX runs.)"""
    straight = runs[preset, framework]
    npz = Path(_config(straight).dataset.removeprefix("npz:"))
    extra = ["--no-images"]
    resumed = tmp_path / "resumed"
    assert cli_module.main([*_args(preset, npz, resumed, *extra), "--steps", "3"], framework=framework) == 0
    assert cli_module.main([*_args(preset, npz, resumed, *extra), "--resume"], framework=framework) == 0
    a, meta_a = load_params(framework, straight)
    b, meta_b = load_params(framework, resumed)
    assert meta_a["step"] == meta_b["step"] == STEPS
    assert_bit_identical(a, b)
    assert metric_records(straight) == metric_records(resumed)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, resumed)]
    assert summaries[1]["resumed_from"] == 3 and summaries[0]["test_loss"] == summaries[1]["test_loss"]


def test_nnx_run_equals_the_linen_run_bit_for_bit(runs, tmp_path):
    """`train --api nnx` (the NNX conv model, BatchNorm statistics as nnx.BatchStat split from the
    params) leaves the Linen run's weights, statistics, step and epoch records and test loss. On
    antixk-vanilla, the BatchNorm preset (tf-cvae's NNX model: parity_tests/test_nnx_parity.py)."""
    preset = "antixk-vanilla"
    linen = runs[preset, "jax"]
    npz = Path(_config(linen).dataset.removeprefix("npz:"))
    nnx_run = tmp_path / "nnx"
    assert cli_module.main([*_args(preset, npz, nnx_run), "--api", "nnx"], framework="jax") == 0
    a, meta_a = load_params("jax", linen)
    b, meta_b = load_params("jax", nnx_run)
    assert meta_a["step"] == meta_b["step"] == STEPS
    assert any("batch_stats" in k for k in a)
    assert_bit_identical(a, b)
    assert metric_records(linen) == metric_records(nnx_run)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (linen, nnx_run)]
    assert summaries[0]["test_loss"] == summaries[1]["test_loss"]


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_iwae_on_tf_cvae_agrees_between_frameworks(runs, tmp_path, capsys):
    """IWAE-64 of the JAX run, scored by JAX and by PyTorch from its safetensors export: finite,
    IWAE < -ELBO, and the two estimates within Monte Carlo noise of each other (~44 nats each)."""
    run = runs["tf-cvae", "jax"]
    st = tmp_path / "w.safetensors"
    assert cli_module.main(["export", str(run), "--out", str(st)], framework="jax") == 0
    flags = ["--k", "64", "--batch-size", "8", "--no-download"]
    records = {}
    for fw, source in (("jax", run), ("torch", st)):
        report = tmp_path / f"{fw}.json"
        assert cli_module.main(["evaluate", "--run", str(source), *flags, "--out", str(report)], fw) == 0
        records[fw] = json.loads(report.read_text())
    capsys.readouterr()
    for r in records.values():
        assert r["num_images"] == N_TEST and r["binarization"].startswith("threshold")
        assert np.isfinite([r["iwae_nll"], r["neg_elbo"]]).all() and r["non_finite_images"] == 0
        assert 0 < r["iwae_nll"] < r["neg_elbo"]
    j, t = records["jax"], records["torch"]
    # the same images and weights, other eps draws: measured 0.010 nats apart (IWAE), 0.003 (-ELBO)
    assert abs(j["iwae_nll"] - t["iwae_nll"]) < 0.05 and abs(j["neg_elbo"] - t["neg_elbo"]) < 0.05
    assert j["kl"] == pytest.approx(t["kl"], rel=1e-4)  # the analytic KL at the same weights


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_evaluate_refuses_the_mse_preset_in_one_line(runs, framework, capsys):
    code, lines = run_main(framework, ["evaluate", "--run", str(runs["antixk-vanilla", framework])], capsys)
    assert_one_line_error(code, lines, "log p(x) needs a Bernoulli likelihood", "mse_mean")


# ------------------------------------------------------------------------------------------- export
def _jax_model(weights: dict, cfg: VAEConfig, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """(decode(z), mean, scale) of the JAX Linen model in eval mode (running statistics)."""
    from jax_vae.linen.models import VAE, variables

    v = variables(weights, cfg)
    mean, scale = VAE(cfg).apply(v, x, method=VAE.encode)  # [N, Z] x2
    return np.asarray(VAE(cfg).apply(v, z, method=VAE.decode)), np.asarray(mean), np.asarray(scale)


def _torch_model(
    state: dict[str, Any], cfg: VAEConfig, x: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, ...]:
    from torch_reference.nn.models import VAE

    model = VAE(cfg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})  # strict: every key fits
    model.eval()
    with torch.no_grad():
        mean, scale = model.encode(torch.from_numpy(x))
        return model.decode(torch.from_numpy(z)).numpy(), mean.numpy(), scale.numpy()


def _probe(cfg: VAEConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.random((5, cfg.input_dim), dtype=np.float32), rng.standard_normal(
        (5, cfg.latent_dim), np.float32
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_export_both_ways_gives_the_same_model(runs, tmp_path, preset):
    """JAX run -> .pt and .safetensors -> torch (strict) == the JAX weights; torch run -> --to-jax ->
    JAX == the torch weights: encoder and decoder in eval mode, to float32 rounding."""
    from safetensors.numpy import load_file

    from jax_vae.checkpoint import load_params as load_jax

    cfg = _config(runs[preset, "jax"])
    x, z = _probe(cfg)
    weights, _ = load_jax(runs[preset, "jax"])
    want = _jax_model(weights, cfg, x, z)
    for name in ("w.pt", "w.safetensors"):
        out = tmp_path / name
        assert cli_module.main(["export", str(runs[preset, "jax"]), "--out", str(out)], framework="jax") == 0
        state = torch.load(out, weights_only=True) if name.endswith(".pt") else load_file(out)
        for got, ref in zip(_torch_model(dict(state), cfg, x, z), want):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=name)
    back = tmp_path / "j"
    assert (
        cli_module.main(["export", str(runs[preset, "torch"]), "--to-jax", "--out", str(back)], "torch") == 0
    )
    state, _ = load_params("torch", runs[preset, "torch"])
    converted, meta = load_jax(back)
    assert meta["step"] == STEPS and ("batch_stats" in converted) == cfg.batch_norm
    for got, ref in zip(_jax_model(converted, cfg, x, z), _torch_model(state, cfg, x, z)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_torch_run_converted_to_jax_evaluates(runs, tmp_path, capsys):
    """tf-cvae trained in PyTorch, --to-jax, scored by JAX's evaluate: finite IWAE-8."""
    back = tmp_path / "j"
    assert (
        cli_module.main(["export", str(runs["tf-cvae", "torch"]), "--to-jax", "--out", str(back)], "torch")
        == 0
    )
    report = tmp_path / "r.json"
    flags = ["--k", "8", "--batch-size", "8", "--no-download", "--out", str(report)]
    assert cli_module.main(["evaluate", "--run", str(back), *flags], framework="jax") == 0
    record = json.loads(report.read_text())
    assert record["step"] == STEPS and 0 < record["iwae_nll"] < record["neg_elbo"] < np.inf
    capsys.readouterr()


# --------------------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_non_finite_loss_stops_a_batch_norm_run_at_the_step(runs, tmp_path, framework):
    """A NaN pixel in one training image (as tests/training/test_train.py does for the MLPs): the run stops at
    the step whose batch holds it, in one line; the last good checkpoint's weights and running
    statistics are finite. The run's own config and data shapes: no new compilation."""
    cfg = _config(runs["antixk-vanilla", framework])
    data = dict(load_dataset(cfg.dataset, resize=cfg.resize))  # with its image_shape, as the run's
    data["train"] = data["train"].copy()
    order = plan.epoch_order(cfg.seed, 0, N_TRAIN)
    bad_step = 5
    data["train"][order[(bad_step - 1) * BATCH + 2], 5] = np.nan  # in the 5th batch
    with pytest.raises(NonFiniteLossError) as err:
        train_fn(framework)(
            cfg,
            tmp_path / "run",
            data=data,
            progress=False,
            images=False,
            checkpoint_every=EVERY,
            log_every=1,
        )
    msg = str(err.value)
    assert f"at step {bad_step} " in msg and "\n" not in msg
    assert "last good checkpoint: step 3" in msg
    weights, meta = load_params(framework, tmp_path / "run")
    assert meta["step"] == 3 and all(np.isfinite(v).all() for v in weights.values())
    assert max(r["step"] for r in metric_records(tmp_path / "run")) < bad_step
    assert not (tmp_path / "run" / "summary.json").exists()


def test_cli_stops_a_diverging_run_in_one_line(runs, tmp_path, capsys):
    """--lr 1e6 on the PyTorch CLI: NaN at step 2, the start line then one `error:` line, exit 1.
    (The same loop raises it for JAX, tested above; a JAX run at another lr compiles anew.)"""
    npz = Path(_config(runs["tf-cvae", "torch"]).dataset.removeprefix("npz:"))
    args = _args("tf-cvae", npz, tmp_path / "run", "--no-images", "--lr", "1e6")
    code, lines = run_main("torch", args, capsys)
    assert code == 1 and len(lines) == 2 and lines[0].startswith("torch: training tf-cvae"), lines
    assert lines[1].startswith("error: non-finite loss (nan) at step 2 (epoch 1); training stopped"), lines
