"""A transposed conv's forward two ways on XLA:CPU: lax.conv_transpose (an lhs-dilated conv over the
zero-dilated input) against the sub-pixel form (one stride-1 conv of the undilated input per output
phase, interleaved, then cropped to torch's / Keras' padding).

First checks the sub-pixel form against lax.conv_transpose in float64 over padding forms, strides,
output_padding and kernel sizes (max error < 1e-12), then times both on the conv presets' stride-2
layers, as a call and per iteration of a lax.scan, best of `repeats`, milliseconds.
Run: python -m benchmarks.investigations.conv_subpixel
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.investigations.conv_grad import SCAN_LENGTH, _best, _in_scan
from jax_vae import conv_ops
from jax_vae.common.config.conv_geometry import Padding, conv_transpose_padding

_DIMS = ("NHWC", "HWIO", "NHWC")
Pads = list[tuple[int, int]]
# (name, batch, input side, in channels, out channels): stride-2 'same' / (p 1, op 1) layers, k = 3
LAYERS = [
    ("tf-cvae decoder.deconv_0", 32, 7, 32, 64),
    ("tf-cvae decoder.deconv_1", 32, 14, 64, 32),
    ("tf-cvae decoder.deconv_0", 512, 7, 32, 64),
    ("tf-cvae decoder.deconv_1", 512, 14, 64, 32),
    ("antixk decoder.deconv_0", 16, 2, 512, 256),
    ("antixk decoder.deconv_2", 16, 8, 128, 64),
    ("antixk decoder.deconv_4", 16, 32, 32, 32),
]


def subpixel_transposed_conv(
    x: jax.Array, kernel: jax.Array, stride: tuple[int, int], pads: Pads
) -> jax.Array:
    """lax.conv_transpose(x, kernel [kh, kw, O, I], stride, pads, transpose_kernel=True) by phases.

    y_full[s i + a] += x[i] W[a] (W = kernel as [kh, kw, I, O]); output phase r gathers the taps
    a = r + s t: Y_r[m] = sum_t x[m - t] W[r + s t], a stride-1 conv of x with the flipped sub-kernel.
    """
    b, h, w, _ = x.shape
    kh, kw, o, _ = kernel.shape
    sh, sw = stride
    weights = kernel.transpose(0, 1, 3, 2)  # [kh, kw, I, O]
    full = [(n - 1) * s + k for n, s, k in zip((h, w), stride, (kh, kw))]
    m = [-(-size // s) for size, s in zip(full, stride)]  # rows / columns per phase
    rows = []
    for r in range(sh):
        row = []
        for c in range(sw):
            sub = weights[r::sh, c::sw]  # [T, U, I, O]
            t, u = sub.shape[:2]
            pad = [(t - 1, m[0] - h), (u - 1, m[1] - w)]
            row.append(
                lax.conv_general_dilated(x, jnp.flip(sub, (0, 1)), (1, 1), pad, dimension_numbers=_DIMS)
            )
        rows.append(jnp.stack(row, axis=3))  # [B, m0, m1, sw, O]
    y = jnp.stack(rows, axis=2).reshape(b, m[0] * sh, m[1] * sw, o)  # phases interleaved
    out = [(n - 1) * s + lo + hi - k + 2 for n, s, (lo, hi), k in zip((h, w), stride, pads, (kh, kw))]
    start = [k - 1 - lo for (lo, _), k in zip(pads, (kh, kw))]
    crop = [(-st, st + size - have, 0) for st, size, have in zip(start, out, y.shape[1:3])]
    return lax.pad(y, jnp.zeros((), y.dtype), [(0, 0, 0), *crop, (0, 0, 0)])


def check_exact() -> float:
    """Worst |sub-pixel - lax.conv_transpose| in float64 over the cases (kernel, stride, padding, op)."""
    rng = np.random.default_rng(0)
    worst = 0.0
    cases: list[tuple[int, int, Padding, int]] = [
        (3, 2, 1, 1), (3, 2, "same", 0), (3, 1, "same", 0), (3, 2, "valid", 0), (3, 2, 0, 1),
        (4, 2, 1, 0), (3, 3, 1, 2), (5, 2, 2, 1),
    ]  # fmt: skip
    with jax.enable_x64(True):
        for k, s, p, op in cases:
            for n in (4, 5, 7):
                pads = [conv_transpose_padding(n, k, s, p, op)] * 2
                x = jnp.asarray(rng.standard_normal((2, n, n, 3)))
                kernel = jnp.asarray(rng.standard_normal((k, k, 4, 3)))
                want = conv_ops.xla_transposed_conv(x, kernel, (s, s), pads)
                got = subpixel_transposed_conv(x, kernel, (s, s), pads)
                assert got.shape == want.shape, (k, s, p, op, n, got.shape, want.shape)
                worst = max(worst, float(jnp.abs(got - want).max()))
    assert worst < 1e-12, worst
    return worst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    print(f"sub-pixel vs lax.conv_transpose, float64: max error {check_exact():.1e}")
    print("| layer | batch | lax.conv_transpose ms (call / scan iteration) | sub-pixel ms |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, batch, side, cin, cout in LAYERS:
        x = jnp.asarray(rng.standard_normal((batch, side, side, cin), dtype=np.float32))
        kernel = jnp.asarray(rng.standard_normal((3, 3, cout, cin), dtype=np.float32))
        pads = [conv_transpose_padding(side, 3, 2, 1, 1)] * 2  # = Keras 'same' for k 3, s 2
        cells = []
        for f in (conv_ops.xla_transposed_conv, subpixel_transposed_conv):
            fn = lambda k, x, f=f: f(x, k, (2, 2), pads)  # conv_grad's (kernel, x) order
            call, scanned = jax.jit(fn), jax.jit(_in_scan(fn))
            plain = 1e3 * _best(lambda: call(kernel, x), a.repeats)
            per_iteration = 1e3 * _best(lambda: scanned(kernel, x), a.repeats) / SCAN_LENGTH
            cells.append(f"{plain:.2f} / {per_iteration:.2f}")
        print(f"| {name} | {batch} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
