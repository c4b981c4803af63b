"""Benchmarks: every CPU mode runs on a tiny grid and reports sane numbers; each mode runs the trainers'
shipped step (same state as the trainer after the same rows); FLOPs, stats, the foreach LuaAdam the
benchmark times and the benchmark-only bf16 steps are exact. No test asserts a speed."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from benchmarks import common, flops
from benchmarks.throughput import run_grid
from jax_vae.common.config.architecture import plan
from jax_vae.common.config.options import Api, JitMode, TrainOptions
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import Reduction, VAEConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = {"repeats": 2, "window_s": 0.02, "warmup_s": 0.0}
SHIPPED_STEP = {
    "jax-jit": "jax_vae.step.make_train_step",
    "jax-scan": "jax_vae.chunk.make_chunk_fn",
    "jax-scan-mb": "jax_vae.chunk.make_chunk_fn",
    "nnx-jit": "jax_vae.nnx.step.train_step",
    "nnx-scan": "jax_vae.chunk.make_chunk_fn (apply_loss=nnx_models.params_loss)",
} | {m: "torch_reference.step.train_step" for m in common.MODES["torch"]}


# Conv configs built from the conv presets' architecture values (tf-cvae as the TensorFlow tutorial;
# an AntixK VanillaVAE shape at 32x32 with 4 smaller layers, without BatchNorm).
TF_CVAE = dataclasses.replace(get_preset("tf-cvae"), name="tf-cvae-shape")  # the preset's layers
ANTIXK_SMALL = dataclasses.replace(
    TF_CVAE,
    name="antixk-small",
    input_dim=32 * 32,
    image_shape=(32, 32),
    conv_channels=(8, 16, 32, 64),
    conv_padding="1",
    latent_dim=16,
    encoder_head="separate",
    decoder_start=(64, 2, 2),
    decoder_start_activation=False,
    deconv_channels=(32, 16, 8, 8),
    deconv_padding="1",
    output_padding=1,
    final_layer="conv",
    activation="leaky_relu",
    decoder_output="tanh",
    likelihood="mse_mean",
    beta=0.00025,
    kl="analytic",
    optimizer="adam",
    adam_eps=1e-8,
    binarization="none",
    init="torch",
    lr=0.005,
    batch_size=64,
)


def _check_ok_fields(rec: dict) -> None:
    """Fields every ok record has, straight from a benchmark process."""
    assert rec["status"] == "ok", rec.get("reason")
    ips, ms = rec["images_per_s"], rec["step_ms"]
    assert math.isfinite(ips["median"]) and ips["median"] > 0
    assert ips["min"] <= ips["q1"] <= ips["median"] <= ips["q3"] <= ips["max"]
    assert ips["n"] == TINY["repeats"] and len(rec["window_s"]) == TINY["repeats"]
    # images/s and step latency describe the same windows: the fastest window gives both extremes.
    assert ips["max"] == pytest.approx(rec["batch_size"] * 1e3 / ms["min"], rel=1e-9)
    assert ips["min"] == pytest.approx(rec["batch_size"] * 1e3 / ms["max"], rel=1e-9)
    assert rec["compile_s"] >= 0 and rec["first_call_s"] > 0
    assert rec["params_finite"] is True
    assert rec["steps_done"] >= 1 + rec["warmup_calls"] + TINY["repeats"]
    assert rec["peak_memory_bytes"] > 50 * 2**20  # a framework process holds at least this much


def _check_ok(rec: dict) -> None:
    """An ok record after the driver added FLOPs and the roofline fraction."""
    _check_ok_fields(rec)
    f = flops.train_step_flops(get_preset(rec["preset"]), rec["batch_size"])
    assert rec["flops_per_step"] == f
    achieved = f["total"] * rec["images_per_s"]["median"] / rec["batch_size"]
    assert rec["achieved_flops"] == pytest.approx(achieved)
    assert 0 < rec["roofline_fraction"] < 1


def test_tiny_grid_runs_every_cpu_mode_and_records_skips(tmp_path: Path) -> None:
    modes = ["jax-jit", "jax-scan", "jax-scan-mb", "nnx-jit", "nnx-scan", "torch-eager", "torch-cuda-graph"]
    res = run_grid(
        ["pytorch-examples"],
        [16, 64],
        ["fp32", "tf32", "bf16"],
        modes,
        TINY,
        tmp_path,
        grid_name="test",
        micro_batch=16,
    )
    recs = {(r["mode"], r["precision"], r["batch_size"]): r for r in res["records"]}
    assert len(recs) == len(modes) * 3 * 2
    gpu = res["frameworks"]["torch"]["info"]["platform"] == "cuda"
    for (mode, precision, batch), rec in recs.items():
        if mode == "jax-scan-mb" and batch <= 16 and precision == "fp32":
            assert rec["status"] == "skipped" and "same program as jax-scan" in rec["reason"]
        elif gpu and mode.startswith("nnx-") and precision == "bf16":
            assert rec["status"] == "skipped" and "NNX modes" in rec["reason"]
        elif gpu or (precision == "fp32" and mode != "torch-cuda-graph"):
            _check_ok(rec)
            assert rec["micro_batch"] == (16 if mode.endswith("-mb") else 0)
            assert rec["step"] == SHIPPED_STEP[mode]
        else:
            assert rec["status"] == "skipped" and len(rec["reason"]) > 20
    for mode in ("jax-scan", "nnx-scan"):
        scan = recs[(mode, "fp32", 16)]
        assert 1 <= scan["scan_length"] <= common.EPOCH_IMAGES // 16
        assert scan["steps_per_window"] == scan["calls_per_window"] * scan["scan_length"]
    assert (
        "calls_per_window" in recs[("nnx-jit", "fp32", 16)]
        and "scan_length" not in recs[("nnx-jit", "fp32", 16)]
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["records"] == json.loads(json.dumps(res["records"]))
    md = (tmp_path / "results.md").read_text()
    assert "best JAX / best PyTorch" in md and "CUDA graphs need a CUDA device" in md
    assert "Flax NNX vs Linen" in md and "nnx-scan / jax-scan: 16: " in md and "| nnx-jit | 16 |" in md
    assert (tmp_path / "throughput_pytorch-examples_fp32.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tiny_grid_torch_compile_modes(tmp_path: Path) -> None:
    """torch.compile default and reduce-overhead compile (C++ inductor on CPU) and run."""
    res = run_grid(
        ["pytorch-examples"],
        [16],
        ["fp32"],
        list(common.COMPILE_MODES),
        TINY,
        tmp_path,
        report=False,
        grid_name="test",
        micro_batch=8,
    )
    assert [r["mode"] for r in res["records"]] == ["torch-compile", "torch-compile-mb", "torch-compile-ro"]
    for rec in res["records"]:
        _check_ok(rec)
        assert rec["micro_batch"] == (8 if rec["mode"] == "torch-compile-mb" else 0)
        assert rec["compile_mode"] == ("reduce-overhead" if rec["mode"] == "torch-compile-ro" else "default")
        assert rec["step"] == "torch_reference.step.train_step"
        assert rec["compiled"] == ["torch_reference.step.train_step"]


def test_flops_count_by_hand() -> None:
    cfg = get_preset("pytorch-examples")  # 784-400-(20, 20) | 20-400-784
    fwd = 2 * (784 * 400 + 400 * 20 + 400 * 20 + 20 * 400 + 400 * 784)
    f1, f64 = flops.train_step_flops(cfg, 1), flops.train_step_flops(cfg, 64)
    assert f1["matmul"] == 3 * fwd - 2 * 784 * 400  # no dX for the data layer
    assert f64["matmul"] == 64 * f1["matmul"]
    assert flops.param_count(cfg) == 652_824
    assert f1["optimizer"] == f64["optimizer"] == 12 * 652_824
    assert f64["elementwise"] < 0.05 * f64["matmul"]
    wd = flops.train_step_flops(get_preset("minimalist"), 1)["optimizer"]
    assert wd == 14 * flops.param_count(get_preset("minimalist"))


def test_conv_flops_count_by_hand() -> None:
    """tf-cvae's layers tap by tap: 'valid' convs are the dense formula, the 'same' transposed convs
    lose the taps that land outside the output; backward = 2x forward (3x but the data layer)."""
    k2 = 3 * 3
    assert flops.taps(2, 4, 3, 2, 1, transposed=True) == 5  # 2x2 -> 4x4 (p 1, op 1): 25 of 36 taps
    assert flops.taps(4, 2, 3, 2, 1, transposed=False) == 5  # its forward conv 4x4 -> 2x2 (p 1)
    assert flops.conv_layer_macs(TF_CVAE) == [
        ("encoder.conv_0", 32 * 13 * 13, 1 * 32 * 13 * 13 * k2),  # 28 -> 13, all taps read data
        ("encoder.conv_1", 64 * 6 * 6, 32 * 64 * 6 * 6 * k2),  # 13 -> 6
        ("decoder.deconv_0", 64 * 14 * 14, 32 * 64 * 20 * 20),  # 7 -> 14: 20 of 7 x 3 taps per side
        ("decoder.deconv_1", 32 * 28 * 28, 64 * 32 * 41 * 41),  # 14 -> 28: 41 of 42
        ("decoder.out", 28 * 28, 32 * 1 * 82 * 82),  # 28 -> 28, stride 1, 'same': 82 of 84
    ]
    macs = [m for _, _, m in flops.conv_layer_macs(TF_CVAE)]
    f = flops.train_step_flops(TF_CVAE, 4)
    assert f["conv"] == 2 * 4 * (2 * macs[0] + 3 * sum(macs[1:]))
    assert f["matmul"] == 3 * 2 * 4 * (2304 * 4 + 2 * 1568)  # encoder.head, decoder.input
    params = 320 + 18_496 + 9_220 + 4_704 + 18_496 + 18_464 + 289  # conv_0 ... decoder.out
    assert flops.param_count(TF_CVAE) == params and f["optimizer"] == 12 * params
    pytest.importorskip("torch")
    from torch_reference.nn.models import init_params

    bn = dataclasses.replace(ANTIXK_SMALL, batch_norm=True)  # scale, bias per channel; not the statistics
    model = init_params(0, bn)
    assert flops.param_count(bn) == sum(p.numel() for p in model.parameters())
    assert flops.param_count(bn) == flops.param_count(ANTIXK_SMALL) + 2 * (8 + 16 + 32 + 64 + 32 + 16 + 8 + 8)
    extra = (
        flops.train_step_flops(bn, 4)["elementwise"] - flops.train_step_flops(ANTIXK_SMALL, 4)["elementwise"]
    )
    assert extra == 18 * 4 * sum(n for p, n, _ in flops.conv_layer_macs(bn) if p != "decoder.out")


@pytest.mark.parametrize("cfg", [TF_CVAE, ANTIXK_SMALL], ids=lambda c: c.name)
def test_conv_flops_match_xla_cost_analysis(cfg: VAEConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's train-step FLOPs agree within 5% with XLA's count of the compiled shipped step
    (jax_vae.step.make_train_step, what jax-jit times) with XLA's own conv derivative (the CPU
    per-tap kernel gradient computes the same taps, but XLA's cost analysis counts its dots short:
    decoder.deconv_1's 23.9 M at batch 8 against 55 M taps); the dense formulas (every output
    position times the whole kernel, every transposed-conv input likewise) are over twice as far off."""
    import jax

    from benchmarks.jax_modes import initial_state
    from jax_vae import conv_ops

    monkeypatch.setattr(conv_ops, "CPU_GRADIENTS", False)
    from jax_vae.optim import make_optimizer
    from jax_vae.step import make_train_step

    batch = 8
    tx = make_optimizer(cfg, steps_per_epoch=10)
    state = jax.eval_shape(lambda: initial_state(cfg, tx))
    x = jax.ShapeDtypeStruct((batch, cfg.input_dim), np.float32)
    step: Any = make_train_step(cfg, tx)  # a jax.jit: lower and compile without running it
    cost = step.lower(state, x, jax.random.key(0)).compile().cost_analysis()
    xla = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    f = flops.train_step_flops(cfg, batch)
    assert f["total"] / xla == pytest.approx(1.0, abs=0.05)  # measured 0.993 (tf-cvae), 0.969 (antixk)
    assert f["conv"] > 0.9 * xla  # the convolutions are the step
    layers, dense = plan(cfg), 0.0
    convs = [s for s in layers.specs if s.kind in ("conv", "conv_transpose")]
    ins = [(cfg.image_channels, *cfg.image_shape), *layers.encoder_maps[:-1], *layers.decoder_maps[:-1]]
    outs = [*layers.encoder_maps, *layers.decoder_maps[1:]]
    for k, (spec, (_, *hw_in), (_, *hw_out)) in enumerate(zip(convs, ins, outs, strict=True)):
        positions = math.prod(hw_in if spec.kind == "conv_transpose" else hw_out)
        dense += 2.0 * batch * spec.in_features * spec.out_features * 9 * positions * (3 if k else 2)
    # measured: dense / XLA 1.044 (tf-cvae), 1.108 (antixk): XLA does not count the padding taps
    assert abs(dense + f["total"] - f["conv"] - xla) > 2 * abs(f["total"] - xla)


def test_peaks() -> None:
    peak = lambda name, precision: (flops.gpu_peak(name, precision) or {}).get("flops")
    assert peak("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert peak("NVIDIA H100 PCIe", "fp32") == 51.2e12
    assert peak("NVIDIA H200", "tf32") == 494.7e12
    assert flops.gpu_peak("Some Other GPU", "fp32") is None
    est = flops.cpu_peak(2)
    if est["flops"] is not None:
        assert 1e9 < est["flops"] < 1e13


def test_summarize_and_timing_loop() -> None:
    s = common.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s["median"], s["min"], s["max"], s["q1"], s["q3"], s["n"]) == (3.0, 1.0, 5.0, 2.0, 4.0, 5)
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        time.sleep(0.002)

    res = common.time_unit(
        call, lambda: None, steps_per_call=3, batch=8, repeats=3, window_s=0.01, warmup_s=0.0
    )
    assert res["calls_per_window"] >= 2 and res["steps_per_window"] == 3 * res["calls_per_window"]
    assert len(calls) == 1 + res["warmup_calls"] + 3 * res["calls_per_window"]
    assert 0.002 * 1e3 / 3 <= res["step_ms"]["min"] < 1e3
    assert res["images_per_s"]["max"] <= 8 * 3 / 0.002


def test_foreach_lua_adam_matches_lua_adam() -> None:
    """The multi-tensor LuaAdam every torch mode times on Lua-Adam presets (parity_tests checks it
    against JAX's lua_adam too)."""
    torch = pytest.importorskip("torch")
    from torch_reference.optim import LuaAdam

    torch.manual_seed(0)
    p_ref = [torch.randn(5, 3), torch.randn(3)]
    p_new = [p.clone() for p in p_ref]
    start = [p.clone() for p in p_ref]
    kw: dict[str, Any] = dict(lr=1e-2, lr_decay=1e-2, b1=0.9, b2=0.99, eps=1e-8, weight_decay=1e-3)
    ref, new = LuaAdam(p_ref, **kw), LuaAdam(p_new, **kw, foreach=True)
    for _ in range(20):
        grads = [torch.randn_like(p) for p in p_ref]
        for ps, opt in ((p_ref, ref), (p_new, new)):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
    assert [new.state[p]["t"].item() for p in p_new] == [20, 20]
    for a, b, a0 in zip(p_ref, p_new, start):
        torch.testing.assert_close(b, a, rtol=2e-6, atol=1e-7)
        assert (a - a0).abs().max() > 1e-3


def test_benchmark_only_bf16_steps() -> None:
    """The bf16 rows' steps: JAX's mixed_train_step at compute dtype fp32 is the shipped train_step
    (same state and metrics), in bf16 it differs by under 2%; torch's Autocast wrapper feeds the
    shipped loss_fn fp32 outputs within 2% of the fp32 loss, gradients in fp32."""
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from benchmarks.jax_modes import initial_state, mixed_train_step
    from benchmarks.torch_modes import Autocast
    from jax_vae.optim import make_optimizer
    from jax_vae.step import train_step
    from torch_reference.losses import loss_fn as torch_loss
    from torch_reference.nn.models import init_params as torch_init

    # One preset per loss branch: BCE-probs + analytic KL (sum), IWAE with logits, MSE + day37 KL (mean).
    for name in ("pytorch-examples", "iwae-paper", "day37"):
        cfg = get_preset(name)
        x = np.random.default_rng(0).random((6, cfg.input_dim), dtype=np.float32)
        tx = make_optimizer(cfg, steps_per_epoch=10)
        key = jax.random.key(3)
        shipped = jax.jit(lambda s, b: train_step(s, b, key, cfg, tx))
        mixed = jax.jit(lambda s, b, dt: mixed_train_step(s, b, key, cfg, tx, dt), static_argnums=2)
        (s1, m1), (s2, m2) = shipped(initial_state(cfg, tx), x), mixed(initial_state(cfg, tx), x, jnp.float32)
        assert int(s2.step) == int(s1.step) == 1 and float(m2.batch_loss) == float(m1.batch_loss)
        for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
        bf16 = float(mixed(initial_state(cfg, tx), x, jnp.bfloat16)[1].batch_loss)
        fp32 = float(m1.batch_loss)
        assert bf16 != fp32 and abs(bf16 - fp32) < 0.02 * abs(fp32)
        eps = np.random.default_rng(1).standard_normal((cfg.num_samples, 6, cfg.latent_dim), dtype=np.float32)
        model = torch_init(0, cfg)
        want = torch_loss(model, torch.from_numpy(x), torch.from_numpy(eps), cfg)[0]
        got = torch_loss(cast(Any, Autocast(model)), torch.from_numpy(x), torch.from_numpy(eps), cfg)[0]
        assert got.dtype == torch.float32 and got.item() != want.item()
        assert abs(got.item() - want.item()) < 0.02 * abs(want.item())
        got.backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize(
    "framework, mode, jit",
    [
        ("jax", "jax-jit", "step"),
        ("jax", "jax-scan", "scan"),
        ("jax", "nnx-jit", "step"),
        ("jax", "nnx-scan", "scan"),
        ("torch", "torch-eager", "scan"),
    ],
)
def test_a_mode_runs_the_trainers_step(tmp_path: Path, framework: str, mode: str, jit: JitMode) -> None:
    """A mode's run on rows [S, B] leaves, bit for bit, the state the trainer's run_chunk leaves on the
    same rows: same init, eps stream, gather, programs and (torch on CPU, Lua Adam) optimizer. The NNX
    modes run against the --api nnx trainer: nnx-scan is its chunk; nnx-jit (nnx_step's idiomatic
    step on model and nnx.Optimizer objects) leaves the state its functional --jit step leaves."""
    if framework == "torch" and pytest.importorskip("torch").cuda.is_available():
        pytest.skip("on CUDA torch-eager takes LuaAdam(foreach=True), not the trainer's for-loop LuaAdam")
    import importlib

    side = importlib.import_module(f"benchmarks.{framework}_modes")
    package = {"jax": "jax_vae", "torch": "torch_reference"}[framework]
    trainer_cls = importlib.import_module(f"{package}.trainer").Trainer
    cfg = get_preset("stutz-rectangles")  # Lua Adam, two hidden layers
    data = common.synthetic_data(96, cfg.input_dim)
    idx = common.epoch_rows(cfg.seed, 0, 96, 16)[:4]  # [4, 16]
    api: Api = "nnx" if mode.startswith("nnx-") else "linen"
    opts = TrainOptions(device="auto", jit=jit, api=api)  # the device the modes use
    trainer = trainer_cls(cfg, {"train": data, "test": data[:16]}, opts, tmp_path)
    trainer.init_state()
    trainer.compile(*idx.shape)
    want = trainer.run_chunk(idx)
    run, state, details = side.build_step(cfg, mode, "fp32", 16, 96 // cfg.batch_size)
    state, got = run(state, side.put(data), side.put(idx))
    side.sync(state)
    assert details["step"] == SHIPPED_STEP[mode]
    assert int(state.step) == int(trainer.state.step) == 4
    assert float(np.asarray(got.batch_loss).reshape(-1)[-1]) == float(want.batch_loss[-1])
    if framework == "jax":
        import jax

        want_p, got_p = (jax.tree_util.tree_leaves(s.params) for s in (trainer.state, state))
    else:
        want_p, got_p = ([p.detach().numpy() for p in s.model.parameters()] for s in (trainer.state, state))
        assert details["optimizer"] == "LuaAdam()"
    for a, b in zip(want_p, got_p):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_time_to_quality_tiny(tmp_path: Path) -> None:
    data_dir = os.environ.get("JAX_VAE_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not available (set JAX_VAE_DATA_DIR)")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.time_to_quality",
        "--data-dir",
        data_dir,
        "--target",
        "400",
        "--max-epochs",
        "2",
        "--evals-per-epoch",
        "2",
        "--train-limit",
        "1024",
        "--jax-mode",
        "jax-scan",
        "--torch-mode",
        "torch-eager",
        "--out",
        str(tmp_path),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    res = json.loads((tmp_path / "time_to_quality.json").read_text())
    assert [r["framework"] for r in res["runs"]] == ["jax", "torch"]
    for r in res["runs"]:
        losses = [c["test_nelbo"] for c in r["curve"]]
        assert r["segment_steps"] == 1024 // 128 // 2
        assert all(math.isfinite(v) for v in losses) and 100 < losses[-1] < 550
        assert r["reached"] == (min(losses) <= 400)
        if r["reached"]:
            assert r["time_to_target_s"] > 0 and r["steps_to_target"] % r["segment_steps"] == 0
    assert "train clock to target" in (tmp_path / "time_to_quality.md").read_text()


def test_conv_config_runs_in_both_benchmark_processes(monkeypatch) -> None:
    """A tiny AntixK-shaped conv config (4x4) through both processes' runner (jax-jit, torch-eager) and
    the driver's FLOP columns; the CPU grid's conv presets run at their own batch sizes, and the
    micro-batch modes skip BatchNorm presets."""
    pytest.importorskip("torch")
    from benchmarks import jax_modes, throughput, torch_modes
    from jax_vae.common.config import presets

    cfg = dataclasses.replace(  # one conv, one transposed conv: the fewest ops to compile
        ANTIXK_SMALL,
        name="tiny-conv",
        input_dim=16,
        image_shape=(4, 4),
        conv_channels=(4,),
        latent_dim=2,
        decoder_start=(4, 2, 2),
        deconv_channels=(4,),
        batch_size=16,
    )
    monkeypatch.setitem(presets.PRESETS, cfg.name, cfg)
    for side, framework, mode in ((jax_modes, "jax", "jax-jit"), (torch_modes, "torch", "torch-eager")):
        (rec,) = common.run_cells(side, framework, cfg.name, mode, "fp32", [16], TINY)["records"]
        throughput.enrich(rec, {"fp32": {"flops": 1e15}})
        _check_ok(rec)
        assert rec["flops_per_step"]["conv"] > rec["flops_per_step"]["matmul"] > 0
    grid = common.GRIDS["cpu"]
    assert set(common.CONV_PRESETS) <= set(grid["presets"]) and grid["preset_batch_sizes"] == {
        "tf-cvae": [32, 128, 512],
        "antixk-vanilla": [16, 64],
    }
    monkeypatch.setattr(throughput, "probe", lambda framework, env: {"error": "not probed in this test"})
    res = throughput.run_grid(
        ["pytorch-examples", cfg.name],
        [16, 64],
        ["fp32"],
        ["jax-jit"],
        TINY,
        write=False,
        preset_batch_sizes={cfg.name: [8]},
    )
    assert [(r["preset"], r["batch_size"]) for r in res["records"]] == [
        ("pytorch-examples", 16),
        ("pytorch-examples", 64),
        (cfg.name, 8),
    ]
    assert res["grid"]["batch_sizes"] == [8, 16, 64]
    skips = throughput.batch_skips("jax-scan-mb", [16, 1024], 512, None, batch_norm=True)
    assert set(skips) == {16, 1024} and all("BatchNorm" in why for why in skips.values())


def test_gpu_grid_covers_the_conv_presets_with_reasons_for_its_skips() -> None:
    """The `full` (GPU) grid runs both conv presets at their own batch sizes; antixk-vanilla's
    ExponentialLR rules out the CUDA-graph mode and its BatchNorm the bf16 step, each with a reason,
    while tf-cvae (constant lr, no BatchNorm) runs every mode and precision."""
    full = common.GRIDS["full"]
    assert set(common.CONV_PRESETS) <= set(full["presets"])
    assert set(full["preset_batch_sizes"]) == set(common.CONV_PRESETS)
    antixk, tf_cvae = get_preset("antixk-vanilla"), get_preset("tf-cvae")
    assert "lr" in (common.preset_skip("torch-cuda-graph", "fp32", antixk) or "")
    assert "BatchNorm" in (common.preset_skip("jax-scan", "bf16", antixk) or "")
    assert common.preset_skip("torch-compile", "fp32", antixk) is None
    for mode in sum(common.MODES.values(), []):
        for precision in full["precisions"]:
            assert common.preset_skip(mode, precision, tf_cvae) is None, (mode, precision)


def test_lua_adam_preset_runs_in_process() -> None:
    """stutz-rectangles (Lua Adam, two hidden layers) through both benchmark processes' runner."""
    pytest.importorskip("torch")
    from benchmarks import jax_modes, torch_modes

    for side, framework, mode in ((jax_modes, "jax", "jax-jit"), (torch_modes, "torch", "torch-eager")):
        out = common.run_cells(side, framework, "stutz-rectangles", mode, "fp32", [16], TINY)
        (rec,) = out["records"]
        _check_ok_fields(rec)
    import torch

    want = "LuaAdam(foreach=True)" if torch.cuda.is_available() else "LuaAdam()"  # the trainer's on CPU
    assert out["records"][0]["optimizer"] == want


@pytest.mark.slow
@pytest.mark.parametrize("preset,reduction", [("pytorch-examples", "sum"), ("wiseodd", "mean")])
def test_torch_compile_mb_step_is_the_library_micro_batch_update(preset: str, reduction: Reduction) -> None:
    """torch-compile-mb (torch.compile of the shipped train_step with cfg.micro_batch) = the eager
    shipped step, from the same init and the same global-RNG eps (fallback_random makes inductor draw
    them with eager torch's generator)."""
    torch = pytest.importorskip("torch")
    import dataclasses

    import torch._inductor.config as inductor_config

    from benchmarks.torch_modes import begin_batch, build_step
    from jax_vae.common.data.datasets import derive_seed
    from jax_vae.common.training import plan
    from torch_reference.nn.models import init_params
    from torch_reference.optim import make_optimizer
    from torch_reference.step import create_state, make_train_step

    cfg = dataclasses.replace(get_preset(preset), micro_batch=8, reduction=reduction)
    x = torch.from_numpy(np.random.default_rng(0).random((32, cfg.input_dim), dtype=np.float32))
    begin_batch()  # fresh dynamo caches, as every benchmark cell
    with inductor_config.patch(fallback_random=True):
        run, state, details = build_step(cfg, "torch-compile-mb", "fp32", 32, 10)  # seeds the global RNG
        state, metrics = run(state, x, torch.arange(32)[None])
    library = create_state(init_params(cfg.seed, cfg), make_optimizer(cfg, foreach=False))
    torch.manual_seed(derive_seed(cfg.seed, plan.Stream.EPS))
    library, want = make_train_step(cfg)(library, x, None)
    assert details["compiled"] == ["torch_reference.step.train_step"] and state.step == library.step == 1
    assert metrics.batch_loss.item() == pytest.approx(want.batch_loss.item(), rel=1e-5)
    for a, b in zip(state.model.parameters(), library.model.parameters()):  # accumulated grads, then Adam
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * b.grad.abs().max().item())
        torch.testing.assert_close(a, b, rtol=0, atol=2 * cfg.lr)  # one step moves each by <= ~lr
        far = ((a - b).abs() > 1e-3 * cfg.lr).float().mean()
        assert far < 1e-3, f"{far:.2%} of elements moved differently"  # only those with |g| ~ adam_eps


def test_report_merge_keeps_ok_records_and_one_roofline() -> None:
    """Parts of a chained grid merge into one table measured against the highest peak of any part."""
    from benchmarks.report import merge

    def part(peak: float, preset: str, status: str = "ok") -> dict:
        rec = {
            "framework": "jax",
            "mode": "jax-scan",
            "preset": preset,
            "precision": "fp32",
            "batch_size": 16,
            "status": status,
        }
        if status == "ok":
            rec.update(achieved_flops=50e9, roofline_fraction=50e9 / peak)
        grid = {"presets": [preset], "batch_sizes": [16], "precisions": ["fp32"], "modes": ["jax-scan"]}
        return {
            "device": "cpu-x",
            "peaks": {"fp32": {"flops": peak}},
            "records": [rec],
            "processes": [],
            "command": f"run {preset}",
            "wall_s": 1.0,
            "grid": grid,
        }

    out = merge([part(100e9, "a"), part(200e9, "b"), part(150e9, "a", status="error")])
    assert out["peaks"]["fp32"]["flops"] == 200e9
    assert {r["preset"]: r["status"] for r in out["records"]} == {"a": "ok", "b": "ok"}
    assert all(r["roofline_fraction"] == pytest.approx(0.25) for r in out["records"])
    assert out["wall_s"] == 3.0 and out["grid"]["presets"] == ["a", "b"]
    with pytest.raises(ValueError, match="different devices"):
        merge([part(1e9, "a"), dict(part(1e9, "a"), device="gpu-y")])


def test_default_output_is_scratch_not_the_committed_results(tmp_path: Path, monkeypatch, capsys) -> None:
    """Without --out a grid writes to the git-ignored runs/bench/<grid>-<device>/, never under
    benchmarks/results; the tiny grid refuses an --out there."""
    from benchmarks import throughput

    out = throughput.default_out("tiny", "cpu-x-2t")
    assert not throughput.is_committed(out) and throughput.is_committed(ROOT / "benchmarks/results/x/y")
    assert out.is_relative_to(ROOT / "runs") and (ROOT / "runs/bench") == throughput.SCRATCH
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out / "results.json")], cwd=ROOT)
    assert ignored.returncode == 0, f"{out} is not git-ignored"
    with pytest.raises(SystemExit) as exit_:
        throughput.main(["--grid", "tiny", "--out", "benchmarks/results/cpu-x-2t"])
    assert exit_.value.code == 2 and "smoke run" in capsys.readouterr().err
    # A whole driver run without --out (probes fail, so no benchmark process starts) lands in scratch.
    monkeypatch.setattr(throughput, "SCRATCH", tmp_path / "scratch")
    monkeypatch.setattr(throughput, "probe", lambda framework, env: {"error": "not probed in this test"})
    throughput.main(["--grid", "tiny", "--no-report"])
    (written,) = (tmp_path / "scratch").glob("tiny-*/results.json")
    saved = json.loads(written.read_text())
    assert saved["out_dir"] == str(written.parent)
    assert {"nnx-jit", "nnx-scan", "jax-scan", "torch-eager"} <= set(saved["grid"]["modes"])  # every mode
    assert "scratch, git-ignored" in capsys.readouterr().out


def test_dispatch_runs_on_a_tiny_setting_and_writes_its_json(tmp_path: Path) -> None:
    """benchmarks.dispatch times every step style (both syncs) and the nnx.jit overhead parts, one worker
    process per framework, and writes dispatch.json and dispatch.md (no timing assertions)."""
    from benchmarks import dispatch

    cmd = [sys.executable, "-m", "benchmarks.dispatch", "--presets", "wiseodd", "--batch-sizes", "1,2"]
    cmd += ["--repeats", "2", "--window-s", "0.005", "--warmup-s", "0", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    res = json.loads((tmp_path / "dispatch.json").read_text())
    got = {(r["framework"], r["style"], r["sync"], r["batch_size"]) for r in res["records"]}
    want = {
        (fw, style, sync, b)
        for fw, styles in dispatch.STEPS.items()
        for style in styles
        for sync in dispatch.SYNCS
        for b in (1, 2)
    } | {("jax", o, "window", b) for o in dispatch.OVERHEADS for b in (1, 2)}
    assert got == want and len(res["records"]) == len(want)
    for r in res["records"]:
        us = r["us_per_call"]
        assert r["preset"] == "wiseodd" and us["n"] == 2 and 0 < us["min"] <= us["median"] <= us["max"]
        assert r["calls_per_window"] >= 1 and r["compile_s"] >= 0
    assert (
        res["frameworks"]["jax"]["framework"] == "jax" and res["frameworks"]["torch"]["framework"] == "torch"
    )
    assert len(res["host"]["load_avg_at_start"]) == 3 and len(res["load_avg_at_end"]) == 3
    assert set(res["processes"]) == {"jax", "torch"} and res["out_dir"] == str(tmp_path)
    md = (tmp_path / "dispatch.md").read_text()
    assert "## wiseodd" in md and "nnx-jit (per-call)" in md and "nnx-jit − nnx-functional" in md
    assert not dispatch.is_committed(dispatch.default_out("dispatch", res["device"]))
