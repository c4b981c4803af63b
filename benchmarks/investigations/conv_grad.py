"""Per-layer conv gradients on XLA:CPU: XLA's own derivative against the shipped one, plain and in a scan.

For every Conv2d / ConvTranspose2d of a conv preset at batch B it times the forward, the input
gradient dX and the kernel gradient dK three ways: XLA's own derivative of lax's conv (jax.vjp of
`conv_ops.xla_conv` / `xla_transposed_conv`), the shipped layers' (`conv_ops._conv_bwd`:
on CPU dK by per-tap matmuls and a transposed conv's dX as the conv it is the adjoint of), each as
one jitted call and per iteration of a lax.scan (what `train --jit scan` runs); and torch's
forward and forward + backward of the same layer (oneDNN). Best of `repeats`, milliseconds.
Run: python -m benchmarks.investigations.conv_grad --preset tf-cvae --batch 32
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
from jax import lax

from benchmarks.host import cpu_threads
from jax_vae import conv_ops
from jax_vae.common.config import architecture
from jax_vae.common.config.conv_geometry import conv_padding, conv_transpose_padding
from jax_vae.common.config.presets import get_preset
from jax_vae.linen import conv_layers as jc
from torch_reference.nn import conv_layers as tc

SCAN_LENGTH = 20


def _best(f: Callable[[], Any], repeats: int) -> float:
    jax.block_until_ready(f())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f())
        best = min(best, time.perf_counter() - t)
    return best


def conv_layers(preset: str) -> list[tuple[str, str, tuple[int, int, int], int, int, Any, int]]:
    """(name, kind, input (C, H, W), out channels, stride, padding, output_padding) per conv layer."""
    cfg = get_preset(preset)
    p = architecture.plan(cfg)
    inputs = {
        "encoder": iter([(cfg.image_channels, *architecture.image_hw(cfg)), *p.encoder_maps]),
        "decoder": iter(p.decoder_maps),
    }
    rows: list[tuple[str, str, tuple[int, int, int], int, int, Any, int]] = []
    for spec in p.specs:
        if spec.kind in ("conv", "conv_transpose"):
            stride, padding, extra = architecture.conv_settings(cfg, spec)
            chw = next(inputs[spec.prefix.split(".")[0]])
            rows.append((spec.prefix, spec.kind, chw, spec.out_features, stride, padding, extra))
    return rows


def _jax_ops(layer: Any, params: dict, x: jax.Array, g: jax.Array, xla: Callable) -> dict[str, Callable]:
    """fwd, dX, dK of the shipped layer and of XLA's own derivative, as functions of (kernel, x)."""

    def ours(kernel: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.vdot(layer.apply({"params": {"kernel": kernel, "bias": params["bias"]}}, x), g)

    def xlas(kernel: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.vdot(xla(x, kernel), g)

    ops: dict[str, Callable] = {"fwd": ours}
    for who, f in (("xla", xlas), ("shipped", ours)):
        ops[f"dX {who}"] = lambda k, x, f=f: jax.grad(f, argnums=1)(k, x)
        ops[f"dK {who}"] = lambda k, x, f=f: jax.grad(f, argnums=0)(k, x)
    return ops


def _in_scan(op: Callable) -> Callable:
    """op per iteration of a lax.scan, its input perturbed by the carry (so nothing is hoisted)."""

    def body(c: jax.Array, _: None, k: jax.Array, x: jax.Array) -> tuple[jax.Array, None]:
        return c + 1e-9 * jnp.sum(op(k + c, x + c)), None

    return lambda k, x: lax.scan(lambda c, _: body(c, _, k, x), jnp.float32(0), None, length=SCAN_LENGTH)[0]


def compare(preset: str, batch: int, repeats: int = 5) -> list[dict[str, Any]]:
    torch.set_num_threads(cpu_threads())
    rng = np.random.default_rng(0)
    rows = []
    for name, kind, (c, h, w), out, stride, padding, extra in conv_layers(preset):
        x_np = rng.standard_normal((batch, h, w, c), dtype=np.float32)
        if kind == "conv":
            layer: Any = jc.Conv2d(c, out, 3, stride, padding)
            tlayer: Any = tc.Conv2d(c, out, 3, stride, padding)
        else:
            layer = jc.ConvTranspose2d(c, out, 3, stride, padding, extra)
            tlayer = tc.ConvTranspose2d(c, out, 3, stride, padding, extra)
        x = jnp.asarray(x_np)
        params = layer.init(jax.random.key(0), x)["params"]
        y = layer.apply({"params": params}, x)
        g = jnp.asarray(rng.standard_normal(y.shape, dtype=np.float32))
        pads = _pads(kind, x.shape[1:3], stride, padding, extra)
        base = conv_ops.xla_conv if kind == "conv" else conv_ops.xla_transposed_conv
        xla = lambda x_, k_, base=base, pads=pads: base(x_, k_, (stride, stride), pads)
        k = params["kernel"]
        row: dict[str, Any] = {"layer": name, "kind": kind, "input": [batch, h, w, c], "out_channels": out}
        for op_name, op in _jax_ops(layer, params, x, g, xla).items():
            call, scanned = jax.jit(op), jax.jit(_in_scan(op))
            row[f"{op_name} ms"] = 1e3 * _best(lambda: call(k, x), repeats)
            row[f"{op_name} in scan ms"] = 1e3 * _best(lambda: scanned(k, x), repeats) / SCAN_LENGTH
        xt = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).requires_grad_()
        gt = torch.from_numpy(np.asarray(g).transpose(0, 3, 1, 2).copy())
        row["torch fwd ms"] = 1e3 * _best(lambda: tlayer(xt), repeats)
        row["torch fwd+bwd ms"] = 1e3 * _best(lambda: tlayer(xt).backward(gt), repeats)
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


def _pads(kind: str, hw: tuple[int, ...], stride: int, padding: Any, extra: int) -> list[tuple[int, int]]:
    if kind == "conv":
        return [conv_padding(n, 3, stride, padding) for n in hw]
    return [conv_transpose_padding(n, 3, stride, padding, extra) for n in hw]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tf-cvae")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    rows = compare(a.preset, a.batch, a.repeats)
    cols = ["fwd", "dX xla", "dX shipped", "dK xla", "dK shipped"]
    print(f"\n{a.preset}, batch {a.batch}, ms (plain call / per scan iteration); torch fwd / fwd+bwd")
    print("| layer | " + " | ".join(cols) + " | torch fwd | torch fwd+bwd |")
    print("|---" * (len(cols) + 3) + "|")
    for r in rows:
        cells = [f"{r[c + ' ms']:.2f} / {r[c + ' in scan ms']:.2f}" for c in cols]
        print(
            f"| {r['layer']} | "
            + " | ".join(cells)
            + f" | {r['torch fwd ms']:.2f} | {r['torch fwd+bwd ms']:.2f} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
