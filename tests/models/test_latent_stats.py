"""The latent statistics of the step records (mu_mean, logvar_std, logvar_mean) in both frameworks, whole
batch, micro-batched and data-parallel; chunk_images_per_s; the --verbose console lines and the progress
bar's postfix."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vae.common import metrics
from jax_vae.common.cli import build_parser
from jax_vae.common.config.options import TrainOptions
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.runs import folder as runs
from jax_vae.common.training import plan, progress
from jax_vae.common.weights import convert
from jax_vae.linen.models import VAE
from tests.helpers import FRAMEWORKS, metric_records, tiny_config, tiny_data, train_fn

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STATS = ("mu_mean", "logvar_std", "logvar_mean")


def direct_stats(cfg: VAEConfig, params: dict, x: np.ndarray) -> dict[str, float]:
    """mean of mu, unbiased std and mean of logvar over the encoder outputs [B, Z], in float64 numpy."""
    out: Any = VAE(cfg).apply({"params": params}, jnp.asarray(x), method=VAE.encode)
    mean, scale = (np.asarray(t, np.float64) for t in out)
    logvar = scale if cfg.scale_param == "logvar" else np.log(np.square(scale))  # [B, Z]
    return {"mu_mean": mean.mean(), "logvar_std": logvar.std(ddof=1), "logvar_mean": logvar.mean()}


def flax_params(framework: str, run_dir: Path, step: int, cfg: VAEConfig) -> dict:
    """The run's parameters after `step` steps as a Flax tree (torch's through the one converter)."""
    if framework == "jax":
        from jax_vae.checkpoint import load_params

        return load_params(run_dir, step)[0]
    from torch_reference.checkpoint import load_params as load_torch

    return jax.tree_util.tree_map(jnp.asarray, convert.torch_to_flax(load_torch(run_dir, step)[0], cfg))


@pytest.mark.parametrize("micro_batch", [0, 3])  # batch 8 = 3 + 3 + 2
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_step_records_carry_the_latent_stats_of_a_direct_computation(tmp_path, framework, micro_batch):
    cfg, data = tiny_config(epochs=0, steps=6, micro_batch=micro_batch), tiny_data()
    run_dir = tmp_path / "run"
    train_fn(framework)(
        cfg, run_dir, data=data, progress=False, images=False, checkpoint_every=5, log_every=1
    )
    steps = {r["step"]: r for r in metric_records(run_dir, drop_timing=False) if r["kind"] == "step"}
    assert sorted(steps) == list(range(1, 7)) and all(tuple(r) == metrics.STEP_KEYS for r in steps.values())
    # chunks [0, 5) and [5, 6): one images/s per chunk, repeated on its records
    assert len({steps[s]["chunk_images_per_s"] for s in range(1, 6)}) == 1
    assert all(r["chunk_images_per_s"] > 0 for r in steps.values())
    # step 6 trained the parameters of checkpoint 5 on the epoch order's rows [40, 48)
    rows = plan.epoch_order(cfg.seed, 0, len(data["train"]))[5 * cfg.batch_size : 6 * cfg.batch_size]
    direct = direct_stats(cfg, flax_params(framework, run_dir, 5, cfg), data["train"][rows])
    for name in STATS:
        assert steps[6][name] == pytest.approx(direct[name], rel=1e-5, abs=1e-7), name
    assert steps[6]["logvar_std"] > 0


def test_sigma_presets_report_log_sigma_squared(tmp_path):
    """scale_param='sigma' (day37's linear sigma, which may be negative): logvar = log sigma^2."""
    cfg, data = tiny_config(scale_param="sigma", kl="day37", epochs=0, steps=2), tiny_data()
    run_dir = tmp_path / "run"
    train_fn("jax")(cfg, run_dir, data=data, progress=False, images=False, checkpoint_every=1, log_every=1)
    step2 = [r for r in metric_records(run_dir) if r["kind"] == "step"][1]
    rows = plan.epoch_order(cfg.seed, 0, len(data["train"]))[cfg.batch_size : 2 * cfg.batch_size]
    direct = direct_stats(cfg, flax_params("jax", run_dir, 1, cfg), data["train"][rows])
    for name in STATS:
        assert step2[name] == pytest.approx(direct[name], rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_verbose_prints_each_step_record_as_one_line(tmp_path, framework, capsys):
    cfg, data = tiny_config(epochs=0, steps=6), tiny_data()
    run_dir = tmp_path / "run"
    train_fn(framework)(cfg, run_dir, data=data, progress=False, images=False, log_every=2, verbose=True)
    err = capsys.readouterr().err.splitlines()
    steps = [r for r in metric_records(run_dir) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [2, 4, 6]
    assert [line for line in err if line.startswith("step ")] == [runs.step_line(r) for r in steps]
    r = steps[-1]
    assert err[-1].startswith(
        f"step 6 epoch 1: loss {r['loss']:.4g} recon {r['recon']:.4g} kl {r['kl']:.4g} "
    )
    assert err[-1].endswith(
        f"mu {r['mu_mean']:.4g} logvar std {r['logvar_std']:.4g} mean {r['logvar_mean']:.4g}"
    )
    # without the flag: no step lines
    train_fn(framework)(cfg, tmp_path / "quiet", data=data, progress=False, images=False, log_every=2)
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]


def test_step_line_names_missing_values():
    line = runs.step_line(
        {"step": 50, "epoch": 1, "loss": 123.44, "recon": 110.2, "kl": 13.24, "mu_mean": 0.0123456}
        | {"logvar_std": None, "logvar_mean": -1.3}
    )
    assert line == "step 50 epoch 1: loss 123.4 recon 110.2 kl 13.24 mu 0.01235 logvar std n/a mean -1.3"


def test_verbose_flag_is_built_from_the_option_and_not_persisted(capsys):
    for framework in FRAMEWORKS:
        parser = build_parser(framework)
        assert parser.parse_args(["train", "--verbose"]).verbose is True
        assert parser.parse_args(["train"]).verbose is None  # not given: the option's default
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--verbose print each step record" in text and "with --jit scan (the default)" in text
    assert "verbose" not in TrainOptions(verbose=True).persisted()


def test_progress_bar_postfix_shows_the_newest_loss_terms_and_statistics(tmp_path, capsys, monkeypatch):
    cfg, data = tiny_config(epochs=0, steps=3), tiny_data()
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bar is shown on terminals only
    train_fn("jax")(cfg, run_dir, data=data, images=False, log_every=1)
    err = capsys.readouterr().err
    last = [r for r in metric_records(run_dir) if r["kind"] == "step"][-1]
    for label, field in progress.POSTFIX.items():
        assert f"{label}={last[field]:.4g}" in err, (label, err[-500:])
    assert set(progress.POSTFIX.values()) == {"loss", "recon", "kl", *STATS}


# ----------------------------------------------------------------------------- data parallelism
def _worker(out: str) -> None:
    """One train step single-device and over 8 devices, whole batch and micro-batched; save stats."""
    from jax_vae import optim, parallel, step
    from jax_vae.common.config.presets import get_preset
    from jax_vae.linen.models import init_params

    assert jax.device_count() == 8, jax.devices()
    mesh, results = parallel.make_mesh(), dict[str, Any]()
    for micro_batch in (0, 24):  # 24 = 3 rows of each of the 8 devices, plus 1 row each
        cfg = small_config(get_preset("pytorch-examples"), micro_batch)
        tx = optim.make_optimizer(cfg, steps_per_epoch=10)
        rng = np.random.default_rng(0)
        batch = (rng.uniform(size=(cfg.batch_size, cfg.input_dim)) < 0.3).astype(np.float32)
        params = jax.tree_util.tree_map(np.asarray, init_params(jax.random.key(0), cfg))  # host copy
        fresh = lambda: step.create_state(jax.tree_util.tree_map(jnp.asarray, params), tx)  # donated
        _, single = step.make_train_step(cfg, tx)(fresh(), jnp.asarray(batch), jax.random.key(1))
        train_step = parallel.make_parallel_train_step(cfg, tx, mesh)
        state = parallel.replicate(fresh(), mesh)
        _, sharded = train_step(state, parallel.shard_batch(batch, mesh), jax.random.key(1))
        direct = direct_stats(cfg, params, batch)
        for name in STATS:
            results[f"{micro_batch}/single/{name}"] = np.asarray(getattr(single, name))
            results[f"{micro_batch}/sharded/{name}"] = np.asarray(parallel.to_host(getattr(sharded, name)))
            results[f"{micro_batch}/direct/{name}"] = np.asarray(direct[name])
    np.savez(out, **results)


def small_config(cfg: VAEConfig, micro_batch: int) -> VAEConfig:
    """A small variant of cfg (batch 32, 6 latents, 48 hidden units) with the given micro_batch."""
    return dataclasses.replace(
        cfg, encoder_hidden=(48,), decoder_hidden=(48,), latent_dim=6, batch_size=32, micro_batch=micro_batch
    )


@pytest.mark.slow
def test_data_parallel_latent_stats_equal_single_device_and_direct(tmp_path):
    from parity_tests.tolerances import assert_close, tol

    out = str(tmp_path / "stats.npz")
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags, PYTHONPATH=str(Path(__file__).resolve().parents[2])
    )
    proc = subprocess.run(
        [sys.executable, __file__, out], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = dict(np.load(out))
    for micro_batch in (0, 24):
        for name in STATS:
            key = f"{micro_batch}/{{}}/{name}"
            single = r[key.format("single")]
            assert_close(
                f"8 devices/{key.format('sharded')}",
                r[key.format("sharded")],
                single,
                tol("float32", "latent_stats"),
            )
            assert_close(
                f"1 device/{key.format('direct')}",
                single,
                r[key.format("direct")],
                tol("float32", "latent_stats"),
            )


if __name__ == "__main__":
    _worker(sys.argv[1])
