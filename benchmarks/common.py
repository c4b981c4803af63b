"""Framework-free benchmark plumbing: grids, mode names, the timing loop, statistics, peak RSS.

Both benchmark processes (bench_jax, bench_torch) time their modes with `time_unit`, so both sides
share one method: first call (compile + one step), warm-up, windows of >= window_s, sync at the
end of every window, median / min / max / IQR over the windows.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Any, Callable

BATCH_SIZES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
PRESETS = ["pytorch-examples", "minimalist", "stutz-rectangles"]
PRECISIONS = ["fp32", "tf32", "bf16"]
MODES = {"jax": ["jax-jit", "jax-scan", "jax-scan-mb"],
         "torch": ["torch-eager", "torch-compile", "torch-compile-mb", "torch-compile-ro", "torch-cuda-graph"]}
# The *-mb modes accumulate each batch's gradient over chunks of `micro_batch` examples (same update;
# cfg.micro_batch): they run only at batch sizes above it, where they differ from their base mode.
MICRO_MODES = {"jax-scan-mb": "jax-scan", "torch-compile-mb": "torch-compile"}
MICRO_BATCH = 512
EPOCH_IMAGES = 60_000   # a Fashion-MNIST training epoch: the jax-scan mode scans at most this many images

# Named grids: `cpu` is the committed CPU run (fp32 only: TF32 and bf16 are GPU modes), `full` the GPU run.
GRIDS: dict[str, dict[str, Any]] = {
    "tiny": {"presets": ["pytorch-examples"], "batch_sizes": [16, 64], "precisions": ["fp32"],
             "repeats": 2, "window_s": 0.05, "warmup_s": 0.05, "micro_batch": 8},
    "cpu": {"presets": PRESETS, "batch_sizes": BATCH_SIZES, "precisions": ["fp32"],
            "repeats": 5, "window_s": 0.2, "warmup_s": 0.2, "micro_batch": MICRO_BATCH},
    "full": {"presets": PRESETS, "batch_sizes": BATCH_SIZES, "precisions": PRECISIONS,
             "repeats": 7, "window_s": 0.25, "warmup_s": 0.5, "micro_batch": MICRO_BATCH},
}


def summarize(values: list[float]) -> dict[str, float]:
    """median, min, max and the quartiles of a sample (n >= 1)."""
    v = sorted(values)
    if len(v) == 1:
        q1 = q3 = v[0]
    else:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q1, "q3": q3, "n": len(v)}


def time_unit(run: Callable[[], None], sync: Callable[[], None], steps_per_call: int, batch: int,
              repeats: int, window_s: float, warmup_s: float, min_warmup: int = 2,
              max_warmup: int = 50) -> dict[str, Any]:
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
        "window_s": windows, "calls_per_window": calls, "steps_per_call": steps_per_call,
        "steps_per_window": steps, "repeats": repeats, "first_call_s": first,
        "compile_s": max(0.0, first - steady), "warmup_calls": len(warm), "warmup_call_s": warm,
    }


def cpu_threads() -> int:
    """Cores this process may run on (sched affinity), the thread count both frameworks get."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def busy_cpu_seconds() -> float | None:
    """CPU-seconds all processes on the host have used since boot (/proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU-seconds used by this process's finished children (user + system)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset (VmHWM), else since process start (getrusage)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def current_rss_bytes() -> int:
    """Resident set size now (VmRSS), 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, Any]:
    """Host facts recorded with every run."""
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu_model": cpu_model(), "cpu_threads": cpu_threads(), "cpu_count": os.cpu_count(),
            "memory_bytes": mem, "platform": platform.platform(), "python": platform.python_version(),
            "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def slug(text: str) -> str:
    """Lower-case file-system-safe slug: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def synthetic_pool(n_batches: int, batch: int, dim: int, seed: int = 0):
    """Benchmark data: n_batches x [batch, dim] float32 U[0, 1) (numpy), identical on both sides."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.random((n_batches, batch, dim), dtype=np.float32)   # [K, B, D]


def pool_batches(batch: int, epoch_images: int = EPOCH_IMAGES, max_bytes: float = 256e6,
                 dim: int = 784) -> int:
    """How many distinct batches the per-step modes cycle through: an epoch, capped by memory."""
    epoch_steps = max(1, epoch_images // batch)
    return max(1, min(epoch_steps, int(max_bytes // (4 * batch * dim)), 64))


def bench_main(argv: list[str] | None, description: str, modes: list[str],
               device_info: Callable[[], dict[str, Any]],
               availability: Callable[[dict[str, Any]], dict[str, Any]],
               run: Callable[..., dict[str, Any]]) -> None:
    """The CLI both benchmark processes share: --probe prints device info and availability; else
    run(preset, mode, precision, batch_sizes, timing, micro_batch) and write its JSON."""
    import argparse
    import json
    import sys
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--probe", action="store_true", help="print device info and availability, then exit")
    p.add_argument("--preset")
    p.add_argument("--mode", choices=modes)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--batch-sizes", default="16,64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--window-s", type=float, default=0.2)
    p.add_argument("--warmup-s", type=float, default=0.2)
    p.add_argument("--micro-batch", type=int, default=MICRO_BATCH, help="chunk size of the *-mb modes")
    p.add_argument("--json", help="write the result here (default: stdout)")
    a = p.parse_args(argv)
    if a.probe:
        info = device_info()
        out = {"info": info, "availability": availability(info)}
    else:
        timing = {"repeats": a.repeats, "window_s": a.window_s, "warmup_s": a.warmup_s}
        out = run(a.preset, a.mode, a.precision, [int(b) for b in a.batch_sizes.split(",")], timing,
                  a.micro_batch)
    text = json.dumps(out, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")
