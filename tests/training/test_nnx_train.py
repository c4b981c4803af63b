"""`train --api nnx`: the JAX trainer on the Flax NNX model (functional style: the graphdef split once,
nnx.merge inside the jitted chunk scan and step). Its runs equal Linen runs of the same seed bit for
bit (the lowered programs are the same: tests/models/test_nnx.py), for every preset, in --jit scan and step;
a checkpoint of either API resumes as the other; evaluate, export and data parallelism read or train
the same TrainState. The SIGKILL resume of an NNX run is tests/runs/test_checkpoint.py's, parametrized."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_vae import trainer as jax_trainer
from jax_vae.checkpoint import load_params as load_tree
from jax_vae.common import cli as cli_module
from jax_vae.common.config.options import TrainOptions
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig, apply_overrides
from jax_vae.common.data.datasets import make_rectangles
from jax_vae.common.metrics import EPOCH_KEYS, STEP_KEYS
from jax_vae.common.weights import convert
from jax_vae.losses import loss_fn
from jax_vae.nnx import models as nnx_models
from tests.helpers import (
    REPO,
    assert_bit_identical,
    assert_one_line_error,
    load_params,
    metric_records,
    run_main,
    subprocess_env,
    tiny_data,
    train_fn,
    tree_snapshot,
    wait_all,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
KW: dict[str, Any] = dict(progress=False, images=False, log_every=1)


def tiny_preset(name: str, **changes: Any) -> VAEConfig:
    """Preset `name` on 8x8 inputs, 16 units per hidden layer (its depth kept), batch 8, 3 steps."""
    p = get_preset(name)
    base = dict(
        input_dim=64,
        encoder_hidden=(16,) * len(p.encoder_hidden),
        decoder_hidden=(16,) * len(p.decoder_hidden),
        batch_size=8,
        epochs=0,
        steps=3,
    )
    return dataclasses.replace(p, **{**base, **changes})


def _steps(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in metric_records(run_dir) if r["kind"] == "step"]


def _same_runs(a: Path, b: Path, step: int) -> None:
    """Checkpoint `step` of runs a and b holds the same params, and their step records agree, every bit."""
    pa, meta = load_params("jax", a, step)
    pb, _ = load_params("jax", b, step)
    assert meta["step"] == step
    assert_bit_identical(pa, pb)
    assert _steps(a) == _steps(b) and len(_steps(a)) == step
    assert all(np.isfinite(r["loss"]) for r in _steps(a))


# The trainer paths that differ between presets: lua_adam with lr decay and bce_lua (stutz-rectangles),
# the iwae objective, lr schedule and dynamic binarization (iwae-paper), the split sigma head with the
# day37 KL and MSE (day37). Every preset's model, loss and step equality is in
# parity_tests/test_nnx_parity.py; this is the trainer around them (CI time: ~12 s a preset).
TRAINER_PRESETS = ["stutz-rectangles", "iwae-paper", "day37"]


@pytest.mark.parametrize("preset", TRAINER_PRESETS)
def test_nnx_trains_as_linen_bit_for_bit_in_scan_and_step_mode(tmp_path, preset):
    """3 steps of --jit scan with each API: the same params, step records and test loss, every bit;
    then each run resumes with --jit step to step 5 in its own API: the same bits again."""
    run = train_fn("jax")
    data = tiny_data(grey=True)  # grey levels: dynamic-binarization presets draw from them
    linen = run(tiny_preset(preset), tmp_path / "linen", data=data, api="linen", **KW)
    nnx_ = run(tiny_preset(preset), tmp_path / "nnx", data=data, api="nnx", **KW)
    _same_runs(tmp_path / "linen", tmp_path / "nnx", 3)
    assert linen["test_loss"] == nnx_["test_loss"] and np.isfinite(nnx_["test_loss"])
    records = metric_records(tmp_path / "nnx", drop_timing=False)
    assert {r["kind"]: tuple(r) for r in records} == {"step": STEP_KEYS, "epoch": EPOCH_KEYS}  # one schema
    for api in ("linen", "nnx"):
        summary = run(
            tiny_preset(preset, steps=5), tmp_path / api, data=data, api=api, jit="step", resume=True, **KW
        )
        assert summary["resumed_from"] == 3 and summary["steps"] == 5
    _same_runs(tmp_path / "linen", tmp_path / "nnx", 5)


def test_a_linen_run_resumes_as_nnx_from_the_same_state(tmp_path):
    """A Linen checkpoint restored by an NNX trainer and put into nnx_models.VAE reads back out of
    nnx.state equal to the Linen params, bit for bit; `--resume --api nnx` of a Linen run is allowed,
    recorded in config.json, and ends on the bits of the same run resumed as Linen."""
    cfg, data, run = tiny_preset("pytorch-examples"), tiny_data(), train_fn("jax")
    for name in ("switched", "linen"):
        run(cfg, tmp_path / name, data=data, api="linen", **KW)
    linen, _ = load_params("jax", tmp_path / "switched")
    trainer = jax_trainer.Trainer(cfg, data, TrainOptions(api="nnx"), tmp_path / "switched" / "checkpoints")
    try:
        trainer.restore()
        model = nnx_models.from_linen_params(cfg, trainer.state.params)
        state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    finally:
        trainer.close()
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert_bit_identical(linen, flat)
    five = tiny_preset("pytorch-examples", steps=5)
    for name, api in (("switched", "nnx"), ("linen", "linen")):
        summary = run(five, tmp_path / name, data=data, api=api, jit="step", resume=True, **KW)
        assert summary["resumed_from"] == 3 and summary["steps"] == 5
    record = json.loads((tmp_path / "switched" / "config.json").read_text())
    assert record["options"]["api"] == "nnx" and record["options"]["jit"] == "step"
    _same_runs(tmp_path / "switched", tmp_path / "linen", 5)


def test_decode_and_reconstruct_of_an_nnx_run_are_linens(tmp_path):
    """The images' decode and reconstruct go through the NNX model: the same outputs, every bit."""
    cfg, data = tiny_preset("stutz-rectangles"), tiny_data()
    out = {}
    for api in ("linen", "nnx"):
        trainer = jax_trainer.Trainer(cfg, data, TrainOptions(api=api), tmp_path / api)
        try:
            trainer.init_state()
            z = np.linspace(-2, 2, 6 * cfg.latent_dim, dtype=np.float32).reshape(6, cfg.latent_dim)
            out[api] = {"decode": trainer.decode(z), "reconstruct": trainer.reconstruct(data["test"][:6])}
            out[api]["evaluate"] = np.array(list(trainer.evaluate().values()))
        finally:
            trainer.close()
    assert out["linen"]["decode"].shape == (6, 64)
    assert_bit_identical(out["linen"], out["nnx"])


def test_evaluate_and_export_of_an_nnx_run(tmp_path, capsys):
    """evaluate reads the run's params (one program for both APIs): its numbers are the NNX model's loss
    on them; export writes the torch state_dict of the NNX state through the one converter, exactly."""
    cfg = apply_overrides(
        get_preset("stutz-rectangles"),
        {"encoder_hidden": (16,), "decoder_hidden": (16,), "batch_size": 8, "steps": 4},
    )
    x, labels = make_rectangles(64, seed=5)
    data = {"train": x, "test": x[:16], "train_labels": labels, "test_labels": labels[:16]}
    run_dir = tmp_path / "run"
    train_fn("jax")(cfg, run_dir, data=data, api="nnx", **KW)
    args = ["evaluate", "--run", str(run_dir), "--k", "4", "--num-images", "6", "--batch-size", "3"]
    assert cli_module.main(args, framework="jax") == 0
    assert "jax stutz-rectangles (step 4): test -ELBO" in capsys.readouterr().out
    record = json.loads((run_dir / "evaluation-k4.json").read_text())
    tree, _ = load_tree(run_dir)  # the params tree evaluate reads
    model = nnx_models.from_linen_params(cfg, tree)
    batch = jnp.asarray(x[:6])  # [B, D]
    eps = jax.random.normal(jax.random.key(3), (1, 6, cfg.latent_dim))  # [L, B, Z]
    nnx_loss, nnx_aux = nnx_models.loss_fn(model, batch, eps, cfg, beta=1.0)
    linen_loss, linen_aux = loss_fn(tree, batch, eps, cfg, beta=1.0)
    assert np.array_equal(nnx_aux["per_example"], linen_aux["per_example"]) and nnx_loss == linen_loss
    assert 0 < record["iwae_nll"] < record["neg_elbo"] and record["step"] == 4, record
    pt = tmp_path / "model.pt"
    assert cli_module.main(["export", str(run_dir), "--out", str(pt)], framework="jax") == 0
    state_dict = torch.load(pt, weights_only=True)
    want = convert.flax_to_torch(nnx_models.to_linen_params(model), cfg)
    assert state_dict.keys() == want.keys()
    for key in want:
        assert torch.equal(state_dict[key], torch.as_tensor(np.asarray(want[key]))), key
    assert np.array_equal(
        state_dict["encoder.hidden_0.weight"].numpy().T, tree["encoder"]["hidden_0"]["kernel"]
    )


def test_torch_refuses_api_nnx_with_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["train", "--steps", "1", "--api", "nnx", "--out", str(out), "--no-progress", "--no-images"]
    code, lines = run_main("torch", args, capsys)
    assert_one_line_error(code, lines, "--api nnx is JAX-only")
    assert tree_snapshot(out) is None
    code, lines = run_main("jax", ["train", "--api", "haiku", "--out", str(out)], capsys)
    assert code == 2 and "invalid choice: 'haiku'" in lines[0] and tree_snapshot(out) is None


# ------------------------------------------------------------------ data parallel, 8 CPU devices
DP_ARGS = [
    "train",
    "--preset",
    "iwae-paper",
    "--dataset",
    "rectangles",
    "--set",
    "encoder_hidden=16",
    "--set",
    "decoder_hidden=16",
    "--set",
    "latent_dim=4",
    "--batch-size",
    "16",
    "--no-progress",
    "--no-images",
    "--data-parallel",
]


def _dp_worker(out: str) -> None:
    """In one process over 8 CPU devices: --data-parallel Linen and NNX scans to step 4, then the NNX run
    continues to step 6 with --jit step (make_parallel_train_step with the NNX loss)."""
    assert jax.device_count() == 8, jax.devices()
    for api in ("linen", "nnx"):
        run = ["--out", f"{out}/{api}", "--api", api]
        assert cli_module.main([*DP_ARGS, "--steps", "4", *run], framework="jax") == 0
    args = [*DP_ARGS, "--steps", "6", "--out", f"{out}/nnx", "--jit", "step", "--resume"]
    assert cli_module.main(args, framework="jax") == 0


@pytest.mark.slow
def test_data_parallel_nnx_equals_data_parallel_linen(tmp_path):
    wait_all(
        [
            subprocess.Popen(
                [sys.executable, __file__, str(tmp_path)],
                env=subprocess_env(8),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        ]
    )
    for api in ("linen", "nnx"):
        summary = json.loads((tmp_path / api / "summary.json").read_text())
        assert summary["device"].startswith("8 x cpu") and "data-parallel" in summary["device"]
    record = json.loads((tmp_path / "nnx" / "config.json").read_text())
    assert record["options"]["api"] == "nnx" and record["options"]["data_parallel"] is True
    a, _ = load_params("jax", tmp_path / "linen", 4)
    b, _ = load_params("jax", tmp_path / "nnx", 4)
    assert_bit_identical(a, b)
    assert _steps(tmp_path / "linen") == _steps(tmp_path / "nnx")[:4]
    c, meta = load_params("jax", tmp_path / "nnx")
    assert meta["step"] == 6 and all(np.isfinite(v).all() for v in c.values())
    assert any(not np.array_equal(b[k], c[k]) for k in b)  # the step-mode program trained on


if __name__ == "__main__":  # the 8-device worker (tests/ is on sys.path as the script's folder)
    _dp_worker(sys.argv[1])
