"""FLOPs per train step from the architecture, and device peak FLOP/s for the roofline column.

Train-step FLOPs (one multiply-add = 2 FLOPs), B = batch, L = samples of z per input:
  matmul:      forward 2*B'*in*out per Linear (B' = B for the encoder, L*B for the decoder);
               backward: dW 2*B'*in*out for every Linear, dX 2*B'*in*out for every Linear except the
               first encoder layer (the data needs no gradient) -> about 3x forward;
  elementwise: bias add + bias grad (2 per output unit), activation fwd + bwd (2 per hidden unit),
               reparameterization + KL fwd/bwd (~12 per latent unit), output sigmoid + likelihood
               fwd/bwd (~12 per output pixel); a stated estimate, a few % of the total here;
  optimizer:   Adam / Lua Adam ~12 FLOPs per parameter per step (+2 with coupled weight decay).
Conv configs (arch="conv", the layers of jax_vae.common.config.architecture.plan) add a `conv` term:
  Conv2d forward 2*B*C_in*C_out*taps_h*taps_w, taps = the (output position, kernel tap) pairs that
               read a real input element, i.e. 2*B*H_out*W_out*C_out*C_in*kh*kw minus the taps on zero
               padding; ConvTranspose2d forward in the scatter form, taps = the (input position,
               kernel tap) pairs whose output lands inside the (cropped) output, i.e. 2*B*H_in*W_in*
               C_in*C_out*kh*kw minus what padding / cropping cuts off. Valid taps, not the dense
               formulas, because they are the arithmetic the math needs (zeros and cropped outputs
               are not work), they are what XLA's cost analysis counts (tests/bench/test_benchmarks.py), and
               on the small maps of these presets the difference is large (a 2x2 -> 4x4 transposed
               conv, k 3, s 2, padding 1, output_padding 1 has 25 of the dense 36 taps);
  backward:    dW and dX each = the forward (the same input/output/tap triples), no dX for the first
               encoder conv; the flattened head and decoder.input Linears are matmuls as above;
  elementwise: bias (2) per output unit, activation (2) per hidden unit, BatchNorm ~18 per unit
               (forward mean, centring, variance, normalize, scale, shift ~7; backward ~11); the
               decoder (decoder.input onwards) runs on L*B rows.
The roofline column divides achieved FLOP/s (total FLOPs per step x steps/s) by the device peak.
"""

from __future__ import annotations

import math
import time
from typing import Any

from jax_vae.common.config import conv_geometry as conv
from jax_vae.common.config.architecture import image_hw, padding, plan
from jax_vae.common.config.vae_config import VAEConfig, layer_specs

ELEMENTWISE_PER_UNIT = {"bias": 2, "activation": 2, "batchnorm": 18, "latent": 12, "output": 12}
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
    """Number of trainable scalars: weights + biases of every Linear / conv, BatchNorm scale + bias
    (its running mean and variance are statistics, not parameters)."""
    if cfg.arch == "conv":
        total = 0
        for spec in plan(cfg).specs:
            i, o, (kh, kw) = spec.in_features, spec.out_features, spec.kernel_size
            total += 2 * o if spec.kind == "batchnorm" else i * o * kh * kw + o
        return total
    return sum(i * o + o for _, _, i, o in layer_specs(cfg))


def taps(n_in: int, n_out: int, kernel: int, stride: int, low: int, transposed: bool) -> int:
    """(position, tap) pairs of one spatial dimension that touch real data: a conv with low padding
    `low` reads input o*s - low + t of output o; a transposed conv (the gradient of the conv from
    n_out back to n_in) writes output i*s - low + t of input i; pairs outside [0, n) are not work."""
    src, dst = (n_in, n_out) if transposed else (n_out, n_in)
    return sum(1 for p in range(src) for t in range(kernel) if 0 <= p * stride - low + t < dst)


def forward_low(kind: str, n_in: int, kernel: int, stride: int, pad: conv.Padding, op: int) -> int:
    """Low padding of a conv, or of the forward conv a transposed conv is the gradient of."""
    if kind == "conv":
        return conv.conv_padding(n_in, kernel, stride, pad)[0]
    return kernel - 1 - conv.conv_transpose_padding(n_in, kernel, stride, pad, op)[0]


def conv_layer_macs(cfg: VAEConfig) -> list[tuple[str, int, float]]:
    """(prefix, output units C*H*W, forward multiply-adds) per example of every conv / transposed conv."""
    layers, k = plan(cfg), cfg.conv_kernel
    enc_pad = padding(cfg.conv_padding, "conv_padding")
    dec_pad = padding(cfg.deconv_padding, "deconv_padding")
    convs = [s for s in layers.specs if s.kind in ("conv", "conv_transpose")]
    ins = [(cfg.image_channels, *image_hw(cfg)), *layers.encoder_maps[:-1], *layers.decoder_maps[:-1]]
    outs = [*layers.encoder_maps, *layers.decoder_maps[1:]]
    out = []
    for spec, (_, *hw_in), (c_out, *hw_out) in zip(convs, ins, outs, strict=True):
        if spec.prefix == "decoder.out":  # stride 1, deconv_padding, no output_padding
            stride, pad, op = 1, dec_pad, 0
        else:
            decoder = spec.prefix.startswith("decoder")
            stride, pad, op = cfg.conv_stride, dec_pad if decoder else enc_pad, cfg.output_padding
        count = 1
        for n_in, n_out in zip(hw_in, hw_out):
            low = forward_low(spec.kind, n_in, k, stride, pad, op)
            count *= taps(n_in, n_out, k, stride, low, spec.kind == "conv_transpose")
        macs = float(spec.in_features * spec.out_features * count)
        out.append((spec.prefix, c_out * math.prod(hw_out), macs))
    return out


def conv_step_flops(cfg: VAEConfig, batch: int) -> dict[str, float]:
    """train_step_flops of a conv config (module docstring): conv, matmul, elementwise, optimizer."""
    L, e = cfg.num_samples, ELEMENTWISE_PER_UNIT
    rows = lambda prefix: batch * (L if prefix.startswith("decoder") else 1)
    convs = conv_layer_macs(cfg)
    conv_f = sum(2.0 * rows(p) * macs * (3 if i > 0 else 2) for i, (p, _, macs) in enumerate(convs))
    units = {p: n for p, n, _ in convs}
    units |= {
        f"{p.split('.')[0]}.norm_{p.rsplit('_', 1)[1]}": n for p, n, _ in convs if "_" in p
    }  # norm_i: conv i's
    matmul = elementwise = 0.0
    for spec in plan(cfg).specs:
        r = rows(spec.prefix)
        if spec.kind.startswith("linear"):
            matmul += 3 * 2.0 * r * spec.in_features * spec.out_features  # forward, dW, dX
            elementwise += e["bias"] * r * spec.out_features
        elif spec.kind == "batchnorm":
            elementwise += e["batchnorm"] * r * units[spec.prefix]
        else:
            hidden = spec.prefix != "decoder.out"
            elementwise += (e["bias"] + e["activation"] * hidden) * r * units[spec.prefix]
    if cfg.decoder_start_activation:
        elementwise += e["activation"] * rows("decoder") * math.prod(cfg.decoder_start)
    elementwise += e["latent"] * L * batch * cfg.latent_dim + e["output"] * L * batch * cfg.input_dim
    optimizer = float(optimizer_per_param(cfg) * param_count(cfg))
    total = conv_f + matmul + elementwise + optimizer
    return {
        "conv": conv_f,
        "matmul": matmul,
        "elementwise": elementwise,
        "optimizer": optimizer,
        "total": total,
    }


def optimizer_per_param(cfg: VAEConfig) -> int:
    """Adam / Lua Adam FLOPs per parameter per step (+2 with coupled weight decay)."""
    return OPTIMIZER_PER_PARAM + (2 if cfg.weight_decay > 0 else 0)


def train_step_flops(cfg: VAEConfig, batch: int) -> dict[str, float]:
    """FLOPs of one train step (forward + backward + optimizer) split as the module docstring says."""
    if cfg.arch == "conv":
        return conv_step_flops(cfg, batch)
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
    optimizer = float(optimizer_per_param(cfg) * param_count(cfg))
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
