"""Data-parallel training (jax_vae/parallel.py, `train --data-parallel`) equals single-device training.

8 CPU devices need XLA_FLAGS=--xla_force_host_platform_device_count=8 before jax starts, so the
runs happen in subprocesses: (1) 100 steps of the pure step, single-device vs sharded over 8 devices,
in one process (this file is the worker: `python tests/training/test_data_parallel.py <out.npz>`); (2) the
CLI as 2 processes x 4 devices joined by jax.distributed (the multi-host path on one machine),
checkpointing and resuming, against a single-device CLI run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from parity_tests.tolerances import assert_close, tol
from tests.helpers import subprocess_env, wait_all

STEPS = 100
# small variants of two presets: IWAE objective, sum reduction, KL warm-up; ELBO, mean reduction
CONFIGS: dict[str, dict[str, Any]] = {
    "iwae": dict(
        preset="iwae-paper",
        encoder_hidden=(64, 32),
        decoder_hidden=(32, 64),
        latent_dim=8,
        batch_size=32,
        kl_warmup_steps=50,
    ),
    "elbo-mean": dict(
        preset="flax-examples",
        encoder_hidden=(48,),
        decoder_hidden=(48,),
        latent_dim=6,
        batch_size=32,
        beta=0.5,
    ),
    # gradient accumulation: chunks of 24 = 3 rows from each of the 8 devices, plus 1 row each
    "elbo-micro": dict(
        preset="pytorch-examples",
        encoder_hidden=(48,),
        decoder_hidden=(48,),
        latent_dim=6,
        batch_size=32,
        micro_batch=24,
    ),
}
CLI_TRAIN = [
    "train",
    "--preset",
    "iwae-paper",
    "--dataset",
    "rectangles",
    "--set",
    "encoder_hidden=32",
    "--set",
    "decoder_hidden=32",
    "--set",
    "latent_dim=4",
    "--batch-size",
    "16",
    "--checkpoint-every",
    "20",
    "--no-progress",
    "--no-images",
]


def _worker(out: str) -> None:
    """Train every config for STEPS steps single-device and sharded over all 8 devices; save both."""
    import jax
    import jax.numpy as jnp

    from jax_vae import optim, parallel, step
    from jax_vae.common.config.presets import get_preset
    from jax_vae.common.config.vae_config import apply_overrides
    from jax_vae.linen import models

    assert jax.device_count() == 8, jax.devices()
    mesh = parallel.make_mesh()
    results: dict[str, Any] = {}  # name -> numpy array, for np.savez
    try:
        parallel.check_batch_size(20, mesh)  # iwae-paper's batch of 20 over 8 devices
        results["uneven_batch_refused"] = np.array(False)
    except ValueError as err:
        results["uneven_batch_refused"] = np.array("multiple of 8" in str(err))
    for name, spec in CONFIGS.items():
        spec = dict(spec)
        cfg = apply_overrides(get_preset(spec.pop("preset")), spec)
        tx = optim.make_optimizer(cfg, steps_per_epoch=40)  # iwae lr schedule: boundaries at 40, 160
        rng = np.random.default_rng(0)
        probs = rng.uniform(0.1, 0.9, size=(1, cfg.input_dim))
        batches = (rng.uniform(size=(STEPS, cfg.batch_size, cfg.input_dim)) < probs).astype(np.float32)
        keys = jax.random.split(jax.random.key(1), STEPS)
        for mode in ("single", "sharded"):
            put: Callable[[np.ndarray], jax.Array]
            state = step.create_state(models.init_params(jax.random.key(0), cfg), tx)
            if mode == "single":  # jit without shardings: device 0 only
                train_step, put = step.make_train_step(cfg, tx), jnp.asarray
            else:
                state = parallel.replicate(state, mesh)
                train_step = parallel.make_parallel_train_step(cfg, tx, mesh)
                put = lambda b: parallel.shard_batch(b, mesh)
            losses = []
            for i in range(STEPS):
                batch = put(batches[i])
                state, metrics = train_step(state, batch, keys[i])
                losses.append(float(parallel.to_host(metrics.batch_loss)))
            prefix = f"{mode}/{name}"
            results[f"{prefix}/devices"] = np.array(len(batch.sharding.device_set))
            results[f"{prefix}/batch_rows_per_device"] = np.array(batch.sharding.shard_shape(batch.shape)[0])
            results[f"{prefix}/params_devices"] = np.array(
                min(len(leaf.sharding.device_set) for leaf in jax.tree_util.tree_leaves(state.params))
            )
            results[f"{prefix}/losses"] = np.array(losses)
            flat = jax.tree_util.tree_leaves_with_path(parallel.to_host(state.params))
            results.update({f"{prefix}/param{jax.tree_util.keystr(p)}": v for p, v in flat})
    np.savez(out, **results)


@pytest.mark.slow
def test_sharded_over_8_devices_matches_single_device_over_100_steps(tmp_path):
    out = str(tmp_path / "dp.npz")
    wait_all(
        [
            subprocess.Popen(
                [sys.executable, __file__, out],
                env=subprocess_env(8),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        ]
    )
    r = dict(np.load(out))
    assert bool(r["uneven_batch_refused"]), "batch 20 over 8 devices must be refused"
    for name, spec in CONFIGS.items():
        assert int(r[f"single/{name}/devices"]) == 1 and int(r[f"single/{name}/params_devices"]) == 1
        assert int(r[f"sharded/{name}/devices"]) == 8 and int(r[f"sharded/{name}/params_devices"]) == 8
        assert int(r[f"sharded/{name}/batch_rows_per_device"]) == spec["batch_size"] // 8
        losses = r[f"single/{name}/losses"]
        assert losses[-1] < 0.9 * losses[0], f"{name}: loss did not decrease over {STEPS} steps"
        assert_close(
            f"8 devices/{name}/losses", r[f"sharded/{name}/losses"], losses, tol("float32", "trajectory_loss")
        )
        for key in (k for k in r if k.startswith(f"single/{name}/param[")):
            sharded = key.replace("single/", "sharded/", 1)
            assert_close(f"8 devices/{sharded}", r[sharded], r[key], tol("float32", "sharded_params"))


def _step_losses(run_dir) -> np.ndarray:
    lines = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return np.array([rec["loss"] for rec in lines if rec["kind"] == "step"])


@pytest.mark.slow
def test_cli_two_processes_over_jax_distributed_match_single_device(tmp_path):
    """`python -m jax_vae train --data-parallel --coordinator ... --process-id i` x 2 processes of 4
    devices for 40 steps (checkpoints at 20 and 40, written by both through orbax), against one
    single-device CLI run; the checkpoint of the 8-device run restores on one device."""
    from jax_vae.checkpoint import load_params
    from jax_vae.common import cli

    single, multi = tmp_path / "single", tmp_path / "multi"
    assert cli.main([*CLI_TRAIN, "--steps", "40", "--out", str(single)], framework="jax") == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [
        *CLI_TRAIN,
        "--steps",
        "40",
        "--out",
        str(multi),
        "--data-parallel",
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
        "--tensorboard",
    ]
    wait_all(
        [
            subprocess.Popen(
                [sys.executable, "-m", "jax_vae", *args, "--process-id", str(i)],
                env=subprocess_env(4),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
    )
    record = json.loads((multi / "config.json").read_text())
    assert record["options"]["data_parallel"] is True
    assert len(list(multi.glob("events.out.tfevents.*"))) == 1  # process 0 alone writes TensorBoard events
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["device"].startswith("8 x cpu") and "2 process(es)" in summary["device"]
    assert summary["steps"] == 40 and sorted(p.name for p in (multi / "checkpoints").iterdir()) == [
        "20",
        "40",
    ]
    assert_close(
        "2 processes/step losses",
        _step_losses(multi),
        _step_losses(single),
        tol("float32", "trajectory_loss"),
    )
    (p_multi, _), (p_single, _) = load_params(multi), load_params(single)
    import jax

    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(p_multi), jax.tree_util.tree_leaves(p_single)
    ):
        assert_close(f"2 processes/param{jax.tree_util.keystr(path)}", a, b, tol("float32", "sharded_params"))


def test_data_parallel_flags_refused_where_unsupported(tmp_path, capsys):
    from jax_vae.common import cli

    assert (
        cli.main(
            [
                "train",
                "--preset",
                "iwae-paper",
                "--dataset",
                "rectangles",
                "--steps",
                "1",
                "--data-parallel",
                "--out",
                str(tmp_path / "t"),
            ],
            framework="torch",
        )
        == 2
    )
    assert "JAX-only" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "train",
                "--preset",
                "iwae-paper",
                "--steps",
                "1",
                "--coordinator",
                "127.0.0.1:1",
                "--out",
                str(tmp_path / "j"),
            ],
            framework="jax",
        )
        == 2
    )
    assert "need `python -m jax_vae train --data-parallel`" in capsys.readouterr().err


def test_initialize_distributed_reads_flags_then_environment(monkeypatch):
    """No flags and no $JAX_* variables: a single process (False); a partial set: one clear error."""
    from jax_vae import parallel

    for name in (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES, parallel.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize_distributed() is False
    monkeypatch.setenv(parallel.ENV_COORDINATOR, "127.0.0.1:1")
    monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, "2")
    with pytest.raises(ValueError, match="process_id=None"):
        parallel.initialize_distributed()


if __name__ == "__main__":
    _worker(sys.argv[1])
