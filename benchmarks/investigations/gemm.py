"""Per-GEMM rates of one train step, XLA vs torch: which matmul library is behind, and for which shape.

For every Linear of the preset at batch B it times the three GEMMs of a train step: forward
[B, in] x [in, out], dX [B, out] x [out, in]^T (not for the data layer) and dW [in, B] x [B, out]
(x^T g), each as one jitted JAX dot and one torch matmul, best of `repeats`, interleaved. Run it
twice, once with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= to see XLA's Eigen path.
Run: python -m benchmarks.investigations.gemm --preset stutz-rectangles --batch 8192
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks.host import cpu_threads
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import layer_specs


def _best(f: Callable[[], Any], repeats: int) -> float:
    f()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def step_gemms(preset: str, batch: int) -> list[tuple[str, tuple[int, int], tuple[int, int], str]]:
    """(name, lhs shape, rhs shape, 'nn' | 'nt' | 'tn') for every GEMM of one train step."""
    out = []
    for k, (module, layer, fan_in, fan_out) in enumerate(layer_specs(get_preset(preset))):
        name = f"{module}.{layer}"
        out.append((f"{name} fwd", (batch, fan_in), (fan_in, fan_out), "nn"))
        if k > 0:
            out.append((f"{name} dX", (batch, fan_out), (fan_in, fan_out), "nt"))
        out.append((f"{name} dW", (batch, fan_in), (batch, fan_out), "tn"))
    return out


def compare(preset: str, batch: int, repeats: int = 10) -> list[dict[str, Any]]:
    """GFLOP/s of each GEMM on both sides (FP32, highest precision, all visible cores)."""
    torch.set_num_threads(cpu_threads())
    jax.config.update("jax_default_matmul_precision", "highest")
    rows = []
    for name, sa, sb, kind in step_gemms(preset, batch):
        rng = np.random.default_rng(0)
        a, b = rng.random(sa, dtype=np.float32), rng.random(sb, dtype=np.float32)
        ta, tb, ja, jb = torch.from_numpy(a), torch.from_numpy(b), jnp.asarray(a), jnp.asarray(b)
        expr = {"nn": lambda x, y: x @ y, "nt": lambda x, y: x @ y.T, "tn": lambda x, y: x.T @ y}[kind]
        texpr = {"nn": lambda: ta @ tb, "nt": lambda: ta @ tb.t(), "tn": lambda: ta.t() @ tb}[kind]
        jf = jax.jit(expr)
        m = sa[1] if kind == "tn" else sa[0]
        k = sa[0] if kind == "tn" else sa[1]
        n = sb[0] if kind == "nt" else sb[1]
        t_torch = t_jax = float("inf")
        for _ in range(2):  # interleaved, best of both rounds
            t_torch = min(t_torch, _best(texpr, repeats))
            t_jax = min(t_jax, _best(lambda: jf(ja, jb).block_until_ready(), repeats))
        flops = 2.0 * m * k * n
        rows.append(
            {
                "gemm": name,
                "m": m,
                "k": k,
                "n": n,
                "torch_gflops": flops / t_torch / 1e9,
                "xla_gflops": flops / t_jax / 1e9,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    import os

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="stutz-rectangles")
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args(argv)
    rows = compare(a.preset, a.batch, a.repeats)
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", file=sys.stderr)
    for r in rows:
        print(
            f"{r['gemm']:>24} [{r['m']}x{r['k']}]x[{r['k']}x{r['n']}]: torch {r['torch_gflops']:6.1f}  "
            f"xla {r['xla_gflops']:6.1f} GFLOP/s",
            file=sys.stderr,
        )
    json.dump(
        {"preset": a.preset, "batch": a.batch, "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows},
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main()
