"""Benchmarks: every CPU mode runs on a tiny grid and reports sane numbers; FLOPs, stats and the
benchmark-only optimizer/loss twins are exact. No test asserts a speed."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import common, flops
from benchmarks.throughput import run_grid
from jax_vae.common.presets import get_preset

ROOT = Path(__file__).resolve().parent.parent
TINY = {"repeats": 2, "window_s": 0.02, "warmup_s": 0.0}


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
    assert rec["peak_memory_bytes"] > 50 * 2**20       # a framework process holds at least this much


def _check_ok(rec: dict) -> None:
    """An ok record after the driver added FLOPs and the roofline fraction."""
    _check_ok_fields(rec)
    f = flops.train_step_flops(get_preset(rec["preset"]), rec["batch_size"])
    assert rec["flops_per_step"] == f
    assert rec["achieved_flops"] == pytest.approx(f["total"] * rec["images_per_s"]["median"] / rec["batch_size"])
    assert 0 < rec["roofline_fraction"] < 1


def test_tiny_grid_runs_every_cpu_mode_and_records_skips(tmp_path: Path) -> None:
    modes = ["jax-jit", "jax-scan", "jax-scan-mb", "torch-eager", "torch-cuda-graph"]
    res = run_grid(["pytorch-examples"], [16, 64], ["fp32", "tf32", "bf16"], modes, TINY, tmp_path,
                   grid_name="test", micro_batch=16)
    recs = {(r["mode"], r["precision"], r["batch_size"]): r for r in res["records"]}
    assert len(recs) == len(modes) * 3 * 2
    gpu = res["frameworks"]["torch"]["info"]["platform"] == "cuda"
    for (mode, precision, batch), rec in recs.items():
        if mode == "jax-scan-mb" and batch <= 16 and precision == "fp32":
            assert rec["status"] == "skipped" and "same program as jax-scan" in rec["reason"]
        elif gpu or (precision == "fp32" and mode != "torch-cuda-graph"):
            _check_ok(rec)
            assert rec.get("micro_batch", 16 if mode.endswith("-mb") else 0) == (16 if mode.endswith("-mb") else 0)
        else:
            assert rec["status"] == "skipped" and len(rec["reason"]) > 20
    scan = recs[("jax-scan", "fp32", 16)]
    assert 1 <= scan["scan_length"] <= common.EPOCH_IMAGES // 16
    assert scan["steps_per_window"] == scan["calls_per_window"] * scan["scan_length"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["records"] == json.loads(json.dumps(res["records"]))
    md = (tmp_path / "results.md").read_text()
    assert "best JAX / best PyTorch" in md and "CUDA graphs need a CUDA device" in md
    assert (tmp_path / "throughput_pytorch-examples_fp32.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tiny_grid_torch_compile_modes(tmp_path: Path) -> None:
    """torch.compile default and reduce-overhead compile (C++ inductor on CPU) and run."""
    res = run_grid(["pytorch-examples"], [16], ["fp32"], ["torch-compile", "torch-compile-mb", "torch-compile-ro"],
                   TINY, tmp_path, report=False, grid_name="test", micro_batch=8)
    assert [r["mode"] for r in res["records"]] == ["torch-compile", "torch-compile-mb", "torch-compile-ro"]
    for rec in res["records"]:
        _check_ok(rec)
        assert rec.get("micro_batch") == (8 if rec["mode"] == "torch-compile-mb" else None)
        assert rec["compile_mode"] == ("reduce-overhead" if rec["mode"] == "torch-compile-ro" else "default")


def test_flops_count_by_hand() -> None:
    cfg = get_preset("pytorch-examples")   # 784-400-(20, 20) | 20-400-784
    fwd = 2 * (784 * 400 + 400 * 20 + 400 * 20 + 20 * 400 + 400 * 784)
    f1, f64 = flops.train_step_flops(cfg, 1), flops.train_step_flops(cfg, 64)
    assert f1["matmul"] == 3 * fwd - 2 * 784 * 400            # no dX for the data layer
    assert f64["matmul"] == 64 * f1["matmul"]
    assert flops.param_count(cfg) == 652_824
    assert f1["optimizer"] == f64["optimizer"] == 12 * 652_824
    assert f64["elementwise"] < 0.05 * f64["matmul"]
    wd = flops.train_step_flops(get_preset("minimalist"), 1)["optimizer"]
    assert wd == 14 * flops.param_count(get_preset("minimalist"))


def test_peaks() -> None:
    assert flops.gpu_peak("NVIDIA H100 80GB HBM3", "bf16")["flops"] == 989.4e12
    assert flops.gpu_peak("NVIDIA H100 PCIe", "fp32")["flops"] == 51.2e12
    assert flops.gpu_peak("NVIDIA H200", "tf32")["flops"] == 494.7e12
    assert flops.gpu_peak("Some Other GPU", "fp32") is None
    est = flops.cpu_peak(2)
    if est["flops"] is not None:
        assert 1e9 < est["flops"] < 1e13


def test_summarize_and_timing_loop() -> None:
    s = common.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s["median"], s["min"], s["max"], s["q1"], s["q3"], s["n"]) == (3.0, 1.0, 5.0, 2.0, 4.0, 5)
    calls = []
    res = common.time_unit(lambda: (calls.append(1), time.sleep(0.002)), lambda: None, steps_per_call=3,
                           batch=8, repeats=3, window_s=0.01, warmup_s=0.0)
    assert res["calls_per_window"] >= 2 and res["steps_per_window"] == 3 * res["calls_per_window"]
    assert len(calls) == 1 + res["warmup_calls"] + 3 * res["calls_per_window"]
    assert 0.002 * 1e3 / 3 <= res["step_ms"]["min"] < 1e3
    assert res["images_per_s"]["max"] <= 8 * 3 / 0.002


def test_foreach_lua_adam_matches_lua_adam() -> None:
    torch = pytest.importorskip("torch")
    from benchmarks.torch_steps import ForeachLuaAdam
    from torch_reference.optim import LuaAdam
    torch.manual_seed(0)
    p_ref = [torch.randn(5, 3), torch.randn(3)]
    p_new = [p.clone() for p in p_ref]
    start = [p.clone() for p in p_ref]
    kw = dict(lr=1e-2, lr_decay=1e-2, b1=0.9, b2=0.99, eps=1e-8, weight_decay=1e-3)
    ref, new = LuaAdam(p_ref, **kw), ForeachLuaAdam(p_new, **kw)
    for t in range(20):
        grads = [torch.randn_like(p) for p in p_ref]
        for ps, opt in ((p_ref, ref), (p_new, new)):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
    assert new.param_groups[0]["step"].item() == 20
    for a, b, a0 in zip(p_ref, p_new, start):
        torch.testing.assert_close(b, a, rtol=2e-6, atol=1e-7)
        assert (a - a0).abs().max() > 1e-3


def test_benchmark_losses_equal_library_losses() -> None:
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from benchmarks.bench_jax import mixed_loss_fn
    from benchmarks.torch_steps import loss_from_eps
    from jax_vae.losses import loss_fn as jax_loss
    from jax_vae.models import init_params as jax_init
    from torch_reference.losses import loss_fn as torch_loss
    from torch_reference.models import init_params as torch_init
    # One preset per loss branch: BCE-probs + analytic KL (sum), IWAE with logits, MSE + day37 KL (mean).
    for name in ("pytorch-examples", "iwae-paper", "day37"):
        cfg = get_preset(name)
        x = np.random.default_rng(0).random((6, cfg.input_dim), dtype=np.float32)
        eps = np.random.default_rng(1).standard_normal((cfg.num_samples, 6, cfg.latent_dim)).astype(np.float32)
        model = torch_init(0, cfg)
        want, aux = torch_loss(model, torch.from_numpy(x), torch.from_numpy(eps), cfg)
        got, aux2 = loss_from_eps(model, torch.from_numpy(x), torch.from_numpy(eps), cfg, cfg.beta)
        assert got.item() == want.item()
        torch.testing.assert_close(aux2["per_example"], aux["per_example"], rtol=0, atol=0)
        params = jax.jit(jax_init, static_argnums=1)(jax.random.PRNGKey(0), cfg)
        ref = jax.jit(lambda p, x, e: jax_loss(p, x, e, cfg)[0])
        mixed = jax.jit(lambda p, x, e, dt: mixed_loss_fn(p, x, e, cfg, cfg.beta, dt)[0], static_argnums=3)
        want_j = float(ref(params, jnp.asarray(x), jnp.asarray(eps)))
        assert float(mixed(params, jnp.asarray(x), jnp.asarray(eps), jnp.float32)) == want_j
        bf16 = float(mixed(params, jnp.asarray(x), jnp.asarray(eps), jnp.bfloat16))
        assert bf16 != want_j and abs(bf16 - want_j) < 0.02 * abs(want_j)


def test_time_to_quality_tiny(tmp_path: Path) -> None:
    data_dir = os.environ.get("JAX_VAE_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not available (set JAX_VAE_DATA_DIR)")
    cmd = [sys.executable, "-m", "benchmarks.time_to_quality", "--data-dir", data_dir, "--target", "400",
           "--max-epochs", "2", "--evals-per-epoch", "2", "--train-limit", "1024", "--jax-mode", "jax-scan",
           "--torch-mode", "torch-eager", "--out", str(tmp_path)]
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


def test_lua_adam_preset_runs_in_process() -> None:
    """stutz-rectangles (Lua Adam, two hidden layers) through both benchmark processes' entry points."""
    pytest.importorskip("torch")
    from benchmarks import bench_jax, bench_torch
    for module, mode in ((bench_jax, "jax-jit"), (bench_torch, "torch-eager")):
        out = module.run("stutz-rectangles", mode, "fp32", [16], TINY)
        (rec,) = out["records"]
        _check_ok_fields(rec)
    assert out["records"][0]["optimizer"].startswith("ForeachLuaAdam")


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["pytorch-examples", "wiseodd"])   # sum and mean reduction
def test_torch_compile_mb_step_is_the_library_micro_batch_update(preset: str) -> None:
    """The benchmark's compiled accumulation step = torch_reference.step.update with cfg.micro_batch
    (same weights; with L = 1 the per-chunk eps draws are the full-batch draw's rows, and
    fallback_random makes inductor draw them with eager torch's generator)."""
    torch = pytest.importorskip("torch")
    import dataclasses

    import torch._inductor.config as inductor_config

    from benchmarks.torch_steps import build_step
    from torch_reference.models import init_params
    from torch_reference.step import create_state, make_train_step
    cfg = dataclasses.replace(get_preset(preset), micro_batch=8)
    x = torch.from_numpy(np.random.default_rng(0).random((32, cfg.input_dim), dtype=np.float32))
    models, metrics = [init_params(0, cfg) for _ in range(2)], []
    opts = [torch.optim.Adam(m.parameters(), lr=cfg.lr, foreach=False) for m in models]
    step, details = build_step(cfg, "torch-compile-mb", "fp32", models[0], opts[0], 32, torch.device("cpu"), 8)
    library = make_train_step(cfg)
    state = create_state(models[1], opts[1])
    with inductor_config.patch(fallback_random=True):
        for run in (lambda: step(x), lambda: library(state, x, None)[1]):
            torch.manual_seed(7)
            metrics.append(run())
    assert details["micro_batch"] == 8
    assert metrics[0]["loss"].item() == pytest.approx(metrics[1]["loss"].item(), rel=1e-5)
    for a, b in zip(models[0].parameters(), models[1].parameters()):   # accumulated gradients, then Adam
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * b.grad.abs().max().item())
        torch.testing.assert_close(a, b, rtol=0, atol=2 * cfg.lr)       # one step moves each by <= ~lr
        far = ((a - b).abs() > 1e-3 * cfg.lr).float().mean()
        assert far < 1e-3, f"{far:.2%} of elements moved differently"   # only those with |g| ~ adam_eps


def test_report_merge_keeps_ok_records_and_one_roofline() -> None:
    """Parts of a chained grid merge into one table measured against the highest peak of any part."""
    from benchmarks.report import merge

    def part(peak: float, preset: str, status: str = "ok") -> dict:
        rec = {"framework": "jax", "mode": "jax-scan", "preset": preset, "precision": "fp32", "batch_size": 16,
               "status": status}
        if status == "ok":
            rec.update(achieved_flops=50e9, roofline_fraction=50e9 / peak)
        grid = {"presets": [preset], "batch_sizes": [16], "precisions": ["fp32"], "modes": ["jax-scan"]}
        return {"device": "cpu-x", "peaks": {"fp32": {"flops": peak}}, "records": [rec], "processes": [],
                "command": f"run {preset}", "wall_s": 1.0, "grid": grid}

    out = merge([part(100e9, "a"), part(200e9, "b"), part(150e9, "a", status="error")])
    assert out["peaks"]["fp32"]["flops"] == 200e9
    assert {r["preset"]: r["status"] for r in out["records"]} == {"a": "ok", "b": "ok"}
    assert all(r["roofline_fraction"] == pytest.approx(0.25) for r in out["records"])
    assert out["wall_s"] == 3.0 and out["grid"]["presets"] == ["a", "b"]
    with pytest.raises(ValueError, match="different devices"):
        merge([part(1e9, "a"), dict(part(1e9, "a"), device="gpu-y")])
