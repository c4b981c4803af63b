"""FLOPs per train step from the architecture, and device peak FLOP/s for the roofline column.

Train-step FLOPs (one multiply-add = 2 FLOPs), B = batch, L = samples of z per input:
  matmul:      forward 2*B'*in*out per Linear (B' = B for the encoder, L*B for the decoder);
               backward: dW 2*B'*in*out for every Linear, dX 2*B'*in*out for every Linear except the
               first encoder layer (the data needs no gradient) -> about 3x forward;
  elementwise: bias add + bias grad (2 per output unit), activation fwd + bwd (2 per hidden unit),
               reparameterization + KL fwd/bwd (~12 per latent unit), output sigmoid + likelihood
               fwd/bwd (~12 per output pixel); a stated estimate, a few % of the total here;
  optimizer:   Adam / Lua Adam ~12 FLOPs per parameter per step (+2 with coupled weight decay).
The roofline column divides achieved FLOP/s (total FLOPs per step x steps/s) by the device peak.
"""

from __future__ import annotations

import time
from typing import Any

from jax_vae.common.config import VAEConfig, layer_specs

ELEMENTWISE_PER_UNIT = {"bias": 2, "activation": 2, "latent": 12, "output": 12}
OPTIMIZER_PER_PARAM = 12

# Dense (non-sparse) peak FLOP/s from NVIDIA datasheets: FP32 is the non-tensor-core rate.
GPU_PEAKS: dict[str, dict[str, float]] = {
    "h100 sxm": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12},
    "h100 pcie": {"fp32": 51.2e12, "tf32": 378.0e12, "bf16": 756.0e12},
    "h100 nvl": {"fp32": 60.0e12, "tf32": 417.5e12, "bf16": 835.0e12},
    "h200": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12},
    "a100": {"fp32": 19.5e12, "tf32": 156.0e12, "bf16": 312.0e12},
    "l4": {"fp32": 30.3e12, "tf32": 60.0e12, "bf16": 121.0e12},
}


def param_count(cfg: VAEConfig) -> int:
    """Number of trainable scalars (weights + biases of every Linear)."""
    return sum(i * o + o for _, _, i, o in layer_specs(cfg))


def train_step_flops(cfg: VAEConfig, batch: int) -> dict[str, float]:
    """FLOPs of one train step (forward + backward + optimizer) split as the module docstring says."""
    L, matmul, elementwise = cfg.num_samples, 0.0, 0.0
    specs = layer_specs(cfg)
    for k, (module, layer, fan_in, fan_out) in enumerate(specs):
        rows = batch * (L if module == "decoder" else 1)
        fwd = 2.0 * rows * fan_in * fan_out
        matmul += fwd + fwd + (fwd if k > 0 else 0.0)  # forward, dW, dX (not for the data)
        elementwise += ELEMENTWISE_PER_UNIT["bias"] * rows * fan_out
        if layer.startswith("hidden"):
            elementwise += ELEMENTWISE_PER_UNIT["activation"] * rows * fan_out
    elementwise += ELEMENTWISE_PER_UNIT["latent"] * L * batch * cfg.latent_dim
    elementwise += ELEMENTWISE_PER_UNIT["output"] * L * batch * cfg.input_dim
    per_param = OPTIMIZER_PER_PARAM + (2 if cfg.weight_decay > 0 else 0)
    optimizer = float(per_param * param_count(cfg))
    return {
        "matmul": matmul,
        "elementwise": elementwise,
        "optimizer": optimizer,
        "total": matmul + elementwise + optimizer,
    }


def gpu_peak(device_name: str, precision: str) -> dict[str, Any] | None:
    """Datasheet peak for a GPU name ('NVIDIA H100 80GB HBM3' -> H100 SXM), None if unknown."""
    name = device_name.lower()
    key: str | None
    if "h100" in name:
        key = "h100 pcie" if "pcie" in name else "h100 nvl" if "nvl" in name else "h100 sxm"
    else:
        key = next((k for k in GPU_PEAKS if k in name), None)
    if key is None:
        return None
    return {
        "flops": GPU_PEAKS[key][precision],
        "kind": "datasheet",
        "source": f"NVIDIA datasheet, {key.upper()} dense {precision}",
    }


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty set elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_mhz() -> float | None:
    """Nominal clock from /proc/cpuinfo 'cpu MHz' (what the hypervisor reports), None if absent."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def cpu_peak(cores: int) -> dict[str, Any]:
    """Estimated FP32 peak: cores x clock x FLOPs/cycle/core, FLOPs/cycle from the SIMD flags.

    2 FMA pipes x (16 lanes AVX-512 | 8 lanes AVX2+FMA | 4 lanes SSE) x 2 FLOPs per FMA.
    """
    flags, mhz = cpu_flags(), cpu_mhz()
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    per_cycle = 2 * lanes * (2 if "fma" in flags else 1)
    if mhz is None:
        return {"flops": None, "source": "unknown clock", "kind": "estimate"}
    return {
        "flops": cores * mhz * 1e6 * per_cycle,
        "kind": "estimate",
        "source": f"{cores} cores x {mhz:.0f} MHz x {per_cycle} FP32 FLOPs/cycle "
        f"(2 FMA pipes x {lanes} lanes x 2)",
    }


def measure_sgemm(n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """Attainable FP32 matmul FLOP/s on this host: numpy float32 [n, n] @ [n, n], best of repeats."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return {
        "flops": 2.0 * n**3 / best,
        "kind": "measured",
        "source": f"numpy float32 matmul {n}x{n}x{n}, best of {repeats}",
    }
