"""Checkpoints: resume is bit-identical on CPU (stopped runs and a run killed with SIGKILL mid-epoch),
torn saves are ignored, only the last few are kept, and export converts JAX <-> PyTorch exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jax_vae.common import cli as cli_module
from jax_vae.common.config.vae_config import from_dict
from tests.helpers import (
    FRAMEWORKS,
    REPO,
    assert_bit_identical,
    load_params,
    metric_records,
    tiny_config,
    tiny_data,
    train_fn,
)

# Lua Adam + dynamic binarization; torch Adam + IWAE lr schedule + IWAE objective + L2
VARIANTS: dict[str, dict[str, Any]] = {
    "lua-dynamic": dict(binarization="dynamic"),
    "adam-iwae": dict(
        optimizer="adam",
        lr_schedule="iwae",
        objective="iwae",
        num_samples=2,
        weight_decay=1e-4,
        decoder_output="logits",
        likelihood="bce_logits",
        init="glorot",
        lr_decay=0.0,
    ),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_mid_epoch_is_bit_identical(tmp_path, framework, variant):
    """30 steps straight == 10 steps, stop, resume to 30: params, optimizer path and metrics agree."""
    train = train_fn(framework)
    cfg = tiny_config(steps=30, **VARIANTS[variant])  # 13 steps/epoch: crosses 2 epoch ends
    data = tiny_data(grey=True)
    kw: dict[str, Any] = dict(data=data, progress=False, images=False, checkpoint_every=4, log_every=1)
    straight = train(cfg, tmp_path / "straight", **kw)
    train(tiny_config(steps=10, **VARIANTS[variant]), tmp_path / "resumed", **kw)
    resumed = train(cfg, tmp_path / "resumed", resume=True, **kw)
    assert resumed["resumed_from"] == 10 and resumed["steps"] == straight["steps"] == 30
    a, meta_a = load_params(framework, tmp_path / "straight")
    b, meta_b = load_params(framework, tmp_path / "resumed")
    assert meta_a["step"] == meta_b["step"] == 30
    assert_bit_identical(a, b)
    assert metric_records(tmp_path / "straight") == metric_records(tmp_path / "resumed")
    assert resumed["test_loss"] == straight["test_loss"]


def _wait_for_checkpoint(framework: str, ckpt_dir: Path, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Poll until the run has a finished checkpoint; returns its step."""
    Checkpoints: Any  # the JAX or the torch class, by framework
    if framework == "jax":
        from jax_vae.checkpoint import Checkpoints
    else:
        from torch_reference.checkpoint import Checkpoints
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ckpt_dir.is_dir():
            steps = Checkpoints(ckpt_dir).all_steps()
            if steps:
                return steps[-1]
        if proc.poll() is not None:
            assert proc.stderr is not None  # Popen(stderr=PIPE)
            raise AssertionError(
                f"training exited ({proc.returncode}) before its first checkpoint: {proc.stderr.read()}"
            )
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.parametrize(("framework", "api"), [("jax", "linen"), ("torch", "linen"), ("jax", "nnx")])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, framework, api):
    package = "jax_vae" if framework == "jax" else "torch_reference"
    args = [
        "train",
        "--api",
        api,
        "--steps",
        "1000",
        "--batch-size",
        "64",
        "--set",
        "encoder_hidden=16",
        "--set",
        "decoder_hidden=16",
        "--checkpoint-every",
        "50",
        "--log-every",
        "25",
        "--no-images",
        "--no-progress",
        "--no-download",
    ]  # 782 steps/epoch (last batch of 16): crosses one
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")  # = one_torch_thread in-process
    proc = subprocess.Popen(
        [sys.executable, "-m", package, *args, "--out", str(killed)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_checkpoint(framework, killed / "checkpoints", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    _, meta = load_params(framework, killed)
    assert meta["step"] < 782, "the run finished its first epoch before it was killed"  # killed mid-epoch
    assert cli_module.main([*args, "--out", str(killed), "--resume"], framework=framework) == 0
    assert cli_module.main([*args, "--out", str(tmp_path / "straight")], framework=framework) == 0
    a, meta_a = load_params(framework, tmp_path / "straight")
    b, meta_b = load_params(framework, killed)
    assert meta_a["step"] == meta_b["step"] == 1000
    assert_bit_identical(a, b)
    assert metric_records(tmp_path / "straight") == metric_records(killed)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_torn_save_is_ignored_and_old_checkpoints_are_pruned(tmp_path, framework):
    train = train_fn(framework)
    kw = dict(data=tiny_data(), progress=False, images=False, checkpoint_every=2)
    train(tiny_config(steps=10), tmp_path / "run", **kw)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    if framework == "jax":  # what a kill mid-save leaves: orbax's unfinished temp folder
        torn = ckpt_dir / "12.orbax-checkpoint-tmp-1234567"
        (torn / "train").mkdir(parents=True)
        (torn / "train" / "junk").write_bytes(b"\0" * 100)
    else:  # ... or a half-written temp file
        (ckpt_dir / ".ckpt_000000012.abcd.tmp").write_bytes(b"PK\3\4 half a zip")
    _, meta = load_params(framework, tmp_path / "run")
    assert meta["step"] == 10
    summary = train(tiny_config(steps=14), tmp_path / "run", resume=True, **kw)
    assert summary["resumed_from"] == 10 and summary["steps"] == 14
    steps = sorted(
        int(p.name[5:14]) if framework == "torch" else int(p.name)
        for p in ckpt_dir.iterdir()
        if p.name[:1] != "." and "tmp" not in p.name
    )
    assert steps == [12, 13, 14]  # every 2 steps, the epoch end (13), the last 3 kept


def _jax_forward(params: dict, cfg, x: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp

    from jax_vae.linen.models import VAE

    eps = jnp.zeros((1, len(x), cfg.latent_dim))
    out, _, _ = typing.cast(Any, VAE(cfg).apply({"params": params}, jnp.asarray(x), eps))
    return np.asarray(out[0])


def test_export_jax_checkpoint_to_torch_and_back_is_exact(tmp_path):
    from jax_vae.checkpoint import load_params as load_jax
    from torch_reference.nn.models import VAE as TorchVAE

    data = tiny_data()
    train_fn("jax")(tiny_config(steps=6), tmp_path / "run", data=data, progress=False, images=False)
    pt = tmp_path / "model.pt"
    assert cli_module.main(["export", str(tmp_path / "run"), "--out", str(pt)], framework="jax") == 0
    sidecar = json.loads(Path(str(pt) + ".json").read_text())
    cfg = from_dict(sidecar["config"])
    assert sidecar["preset"] == "stutz-rectangles" and sidecar["step"] == 6
    model = TorchVAE(cfg)
    model.load_state_dict(torch.load(pt, weights_only=True))  # strict: every key fits
    params, _ = load_jax(tmp_path / "run")
    x = data["test"][:5]
    with torch.no_grad():
        out_t = model(torch.from_numpy(x), torch.zeros(1, 5, cfg.latent_dim))[0][0].numpy()
    np.testing.assert_allclose(out_t, _jax_forward(params, cfg, x), rtol=1e-5, atol=1e-6)
    back = tmp_path / "back"  # and back to JAX: exact
    assert cli_module.main(["export", str(pt), "--to-jax", "--out", str(back)], framework="jax") == 0
    again, meta = load_jax(back)
    assert meta["preset"] == "stutz-rectangles"
    flat = lambda p: {f"{m}.{n}.{k}": v for m, ns in p.items() for n, ks in ns.items() for k, v in ks.items()}
    assert_bit_identical(flat(params), flat(again))
    pt2 = tmp_path / "again.pt"  # a params export re-exports
    assert cli_module.main(["export", str(back), "--out", str(pt2)], framework="torch") == 0
    one, two = torch.load(pt, weights_only=True), torch.load(pt2, weights_only=True)
    assert all(torch.equal(one[k], two[k]) for k in one) and one.keys() == two.keys()


def test_export_a_torch_run_to_jax(tmp_path):
    from jax_vae.checkpoint import load_params as load_jax

    train_fn("torch")(tiny_config(steps=6), tmp_path / "run", data=tiny_data(), progress=False, images=False)
    assert (
        cli_module.main(
            ["export", str(tmp_path / "run"), "--to-jax", "--out", str(tmp_path / "j")], framework="torch"
        )
        == 0
    )
    params, meta = load_jax(tmp_path / "j")
    state, _ = load_params("torch", tmp_path / "run")
    assert meta["step"] == 6
    assert np.array_equal(params["encoder"]["hidden_0"]["kernel"], state["encoder.hidden_0.weight"].T)
    assert np.array_equal(params["decoder"]["out"]["bias"], state["decoder.out.bias"])
