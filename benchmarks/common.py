"""Framework-free benchmark plumbing: grids, mode names, the timing loop, statistics, the benchmark
data, and the one runner both benchmark processes share (host facts: benchmarks/host.py).

A benchmark process is `python -m benchmarks.jax_modes` or `python -m benchmarks.torch_modes`: the
mode module is a `Side` (the same functions on both sides) and `bench_main` runs it. Both sides time
their modes with `time_unit`, so both share one method: first call (compile + one call), warm-up,
windows of >= window_s, sync at the end of every window, median / min / max / IQR over the windows.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from benchmarks.host import current_rss_bytes, reset_peak_rss
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.training import plan

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
PRESETS = ["pytorch-examples", "minimalist", "stutz-rectangles"]
CONV_PRESETS = ["tf-cvae", "antixk-vanilla"]
# A conv preset's batch sizes in the CPU grid (instead of BATCH_SIZES): what fits CPU memory and time,
# per step ~32 MFLOP x B (tf-cvae) and ~310 MFLOP x B (antixk-vanilla, 64x64) at tens of GFLOP/s.
CPU_CONV_BATCH_SIZES = {"tf-cvae": [32, 128, 512], "antixk-vanilla": [16, 64]}
# ... and in the GPU grid (estimated activations at the largest: ~2 GB for tf-cvae at 8192, ~3 GB for
# antixk-vanilla at 1024, 64x64; not measured yet).
GPU_CONV_BATCH_SIZES = {"tf-cvae": [32, 128, 512, 2048, 8192], "antixk-vanilla": [16, 64, 256, 1024]}
PRECISIONS = ["fp32", "tf32", "bf16"]
MODES = {
    "jax": ["jax-jit", "jax-scan", "jax-scan-mb", "nnx-jit", "nnx-scan"],  # nnx-*: the Flax NNX steps
    "torch": ["torch-eager", "torch-compile", "torch-compile-mb", "torch-compile-ro", "torch-cuda-graph"],
}
# The *-mb modes accumulate each batch's gradient over chunks of `micro_batch` examples (same update;
# cfg.micro_batch): they run only at batch sizes above it, where they differ from their base mode.
MICRO_MODES = {"jax-scan-mb": "jax-scan", "torch-compile-mb": "torch-compile"}
SCAN_MODES = ("jax-scan", "jax-scan-mb", "nnx-scan")  # one call = a chunk of steps; else one step
COMPILE_MODES = ("torch-compile", "torch-compile-mb", "torch-compile-ro")  # compile every batch size
MICRO_BATCH = 512
EPOCH_IMAGES = 60_000  # a Fashion-MNIST training epoch: the benchmark's device dataset

# Named grids: `cpu` is the committed CPU run (fp32 only: TF32 and bf16 are GPU modes), `full` the GPU run.
# A grid runs every mode of MODES (Linen, NNX and PyTorch) unless --modes picks some; a preset named in
# its preset_batch_sizes runs those batch sizes instead of batch_sizes.
GRIDS: dict[str, dict[str, Any]] = {
    "tiny": {
        "presets": ["pytorch-examples"],
        "batch_sizes": [16, 64],
        "precisions": ["fp32"],
        "repeats": 2,
        "window_s": 0.05,
        "warmup_s": 0.05,
        "micro_batch": 8,
    },
    "cpu": {
        "presets": PRESETS + CONV_PRESETS,
        "batch_sizes": BATCH_SIZES,
        "preset_batch_sizes": CPU_CONV_BATCH_SIZES,
        "precisions": ["fp32"],
        "repeats": 5,
        "window_s": 0.2,
        "warmup_s": 0.2,
        "micro_batch": MICRO_BATCH,
    },
    "full": {
        "presets": PRESETS + CONV_PRESETS,
        "batch_sizes": BATCH_SIZES,
        "preset_batch_sizes": GPU_CONV_BATCH_SIZES,
        "precisions": PRECISIONS,
        "repeats": 7,
        "window_s": 0.25,
        "warmup_s": 0.5,
        "micro_batch": MICRO_BATCH,
    },
}


def preset_skip(mode: str, precision: str, cfg: VAEConfig) -> str | None:
    """Why (mode, precision) cannot time this preset's real step, else None."""
    if mode == "torch-cuda-graph" and (cfg.lr_schedule != "constant" or cfg.kl_warmup_steps > 0):
        return (
            "a captured CUDA graph replays host values: this preset's lr or KL weight changes with the step"
        )
    if precision == "bf16" and cfg.batch_norm:
        return "the benchmark-only bf16 step carries no BatchNorm running statistics"
    return None


def summarize(values: list[float]) -> dict[str, float]:
    """median, min, max and the quartiles of a sample (n >= 1)."""
    v = sorted(values)
    if len(v) == 1:
        q1 = q3 = v[0]
    else:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q1, "q3": q3, "n": len(v)}


def time_unit(
    run: Callable[[], None],
    sync: Callable[[], None],
    steps_per_call: int,
    batch: int,
    repeats: int,
    window_s: float,
    warmup_s: float,
    min_warmup: int = 2,
    max_warmup: int = 50,
) -> dict[str, Any]:
    """Time `run` (one call = steps_per_call train steps of `batch` images, async allowed).

    1. first call, synced: compile + one call; 2. warm-up calls (>= min_warmup and >= warmup_s);
    3. calls per window = ceil(window_s / steady call time); `repeats` windows, synced at each end.
    compile_s = first call - steady call time (the steady time is the median warm-up call).
    """
    t0 = time.perf_counter()
    run()
    sync()
    first = time.perf_counter() - t0
    warm: list[float] = []
    start = time.perf_counter()
    while len(warm) < max_warmup and (len(warm) < min_warmup or time.perf_counter() - start < warmup_s):
        t = time.perf_counter()
        run()
        sync()
        warm.append(time.perf_counter() - t)
    steady = statistics.median(warm[-min_warmup:]) if len(warm) >= min_warmup else statistics.median(warm)
    calls = max(1, math.ceil(window_s / max(steady, 1e-9)))
    windows = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            run()
        sync()
        windows.append(time.perf_counter() - t)
    steps = calls * steps_per_call
    return {
        "images_per_s": summarize([steps * batch / w for w in windows]),
        "step_ms": summarize([1e3 * w / steps for w in windows]),
        "window_s": windows,
        "calls_per_window": calls,
        "steps_per_call": steps_per_call,
        "steps_per_window": steps,
        "repeats": repeats,
        "first_call_s": first,
        "compile_s": max(0.0, first - steady),
        "warmup_calls": len(warm),
        "warmup_call_s": warm,
    }


def synthetic_data(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Benchmark data: [n, dim] float32 U[0, 1) (numpy), identical on both sides."""
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)  # [N, D]


def epoch_rows(seed: int, epoch: int, n: int, batch: int) -> np.ndarray:
    """The trainers' batches of one epoch: plan.epoch_order cut into [S, B] rows (last partial dropped)."""
    steps = n // batch
    return plan.epoch_order(seed, epoch, n)[: steps * batch].reshape(steps, batch)


Run = Callable[[Any, Any, Any], tuple[Any, Any]]  # (state, data [N, D], rows [S, B]) -> (state, metrics)


class Side(Protocol):
    """What benchmarks.jax_modes and benchmarks.torch_modes both provide (module-level functions)."""

    def device_info(self) -> dict[str, Any]: ...

    def availability(self, info: dict[str, Any]) -> dict[str, Any]: ...

    def set_precision(self, precision: str) -> dict[str, Any]: ...

    def put(self, a: np.ndarray) -> Any: ...

    def build_step(
        self, cfg: VAEConfig, mode: str, precision: str, batch_size: int, steps_per_epoch: int
    ) -> tuple[Run, Any, dict[str, Any]]: ...

    def sync(self, state: Any) -> None: ...

    def begin_batch(self) -> None: ...

    def end_batch(self, state: Any) -> dict[str, Any]: ...

    def make_eval(self, cfg: VAEConfig, test: Any) -> Callable[[Any], float]: ...


def run_batch(
    side: Side, cfg: VAEConfig, mode: str, precision: str, batch: int, timing: dict[str, Any]
) -> dict[str, Any]:
    """Time one batch size: the mode's step on an epoch of device data, batches in the trainers' order.

    One call runs one step (rows [1, B]), or for SCAN_MODES a chunk of S steps: an epoch, or fewer
    when fewer already fill a timing window (S from a probe of 1-step chunks)."""
    side.begin_batch()
    data = side.put(synthetic_data(EPOCH_IMAGES, cfg.input_dim))  # [N, D] on the device
    order = epoch_rows(cfg.seed, 0, EPOCH_IMAGES, batch)  # [S_epoch, B]
    run, state, details = side.build_step(cfg, mode, precision, batch, len(order))
    box: dict[str, Any] = {"state": state, "i": 0}

    def calls(steps: int) -> Callable[[], None]:
        chunks = [side.put(order[i : i + steps]) for i in range(0, len(order) - steps + 1, steps)]

        def call() -> None:
            box["state"], _ = run(box["state"], data, chunks[box["i"] % len(chunks)])
            box["i"] += 1

        return call

    sync = lambda: side.sync(box["state"])
    steps = 1
    extra: dict[str, Any] = {}
    if mode in SCAN_MODES:
        probe = time_unit(calls(1), sync, 1, batch, repeats=1, window_s=0.0, warmup_s=0.0)
        step_s = probe["step_ms"]["median"] / 1e3
        steps = max(1, min(len(order), math.ceil(timing["window_s"] / step_s)))
        extra = {"scan_length": steps, "epoch_steps": len(order), "probe_step_ms": 1e3 * step_s}
    call = calls(steps)
    gc.collect()
    rss_reset = reset_peak_rss()  # peak RSS from here: compile + timed steps of this mode
    rss_before = current_rss_bytes()
    result = time_unit(call, sync, steps, batch, **timing)
    result.update(
        details | extra | side.end_batch(box["state"]),
        micro_batch=cfg.micro_batch,
        rss_before_bytes=rss_before if rss_reset else None,
    )
    return result


def run_cells(
    side: Side,
    framework: str,
    preset: str,
    mode: str,
    precision: str,
    batch_sizes: list[int],
    timing: dict[str, Any],
    micro_batch: int = MICRO_BATCH,
) -> dict[str, Any]:
    """Time every batch size (ascending); errors are recorded per batch size, not raised, and after an
    out-of-memory error the larger batch sizes are skipped."""
    flags = side.set_precision(precision)
    cfg = get_preset(preset)
    if mode in MICRO_MODES:
        cfg = dataclasses.replace(cfg, micro_batch=micro_batch)
    records, oom = [], False
    for batch in sorted(batch_sizes):
        rec: dict[str, Any] = {
            "framework": framework,
            "mode": mode,
            "preset": preset,
            "precision": precision,
            "batch_size": batch,
        }
        if oom:
            rec.update(status="skipped", reason="out of memory at a smaller batch size")
        else:
            try:
                rec.update(run_batch(side, cfg, mode, precision, batch, timing), status="ok")
            except Exception as e:  # e.g. a compile failure or OOM, recorded for this batch size
                oom = "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"
                rec.update(status="error", reason=f"{type(e).__name__}: {str(e)[:400]}")
        print(
            json.dumps(
                {k: rec.get(k) for k in ("mode", "preset", "precision", "batch_size", "status")}
                | {"img_s": rec.get("images_per_s", {}).get("median")}
            ),
            flush=True,
        )
        records.append(rec)
    return {"info": side.device_info(), "flags": flags, "records": records}


def framework_of(mode: str) -> str:
    """'jax' or 'torch': the benchmark process that runs `mode`."""
    (fw,) = [f for f, modes in MODES.items() if mode in modes]
    return fw


def bench_main(argv: list[str] | None, side: Side, framework: str, description: str) -> None:
    """The CLI of both benchmark processes: --probe prints device info and availability; else time
    one (preset, mode, precision) over the batch sizes and write its JSON."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--probe", action="store_true", help="print device info and availability, then exit")
    p.add_argument("--preset")
    p.add_argument("--mode", choices=MODES[framework])
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--batch-sizes", default="16,64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--window-s", type=float, default=0.2)
    p.add_argument("--warmup-s", type=float, default=0.2)
    p.add_argument("--micro-batch", type=int, default=MICRO_BATCH, help="chunk size of the *-mb modes")
    p.add_argument("--json", help="write the result here (default: stdout)")
    a = p.parse_args(argv)
    if a.probe:
        info = side.device_info()
        out = {"info": info, "availability": side.availability(info)}
    else:
        timing = {"repeats": a.repeats, "window_s": a.window_s, "warmup_s": a.warmup_s}
        out = run_cells(
            side,
            framework,
            a.preset,
            a.mode,
            a.precision,
            [int(b) for b in a.batch_sizes.split(",")],
            timing,
            a.micro_batch,
        )
    text = json.dumps(out, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")
