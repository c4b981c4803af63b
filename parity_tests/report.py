"""Parity report: per preset, dtype and JAX model API (Linen, NNX), max abs / rel JAX-vs-torch
differences of the loss, every gradient and the 100-step trajectory, as a Markdown table; then NNX
against Linen (forward, loss and gradients; both NNX step styles' trajectories); then the
convolution layers alone (conv_harness: each padding form, BatchNorm train / eval, flatten order).

    python -m parity_tests.report [--presets a,b] [--apis linen,nnx] [--steps 100]
                                  [--precision highest|default] [--tables models,conv]
"""

from __future__ import annotations

import argparse
import platform
import sys


def _configure(precision: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    if precision != "default":
        jax.config.update("jax_default_matmul_precision", precision)


def _row(preset: str, dtype: str, steps: int, api: str = "linen") -> str:
    import numpy as np

    from parity_tests.harness import forward_pair, trajectory_pair
    from parity_tests.sizes import parity_preset
    from parity_tests.tolerances import CHAOTIC, max_diffs, pre_batchnorm_biases, tol

    cfg = parity_preset(preset)
    pairs = forward_pair(cfg, dtype, api)
    loss_abs, loss_rel = max_diffs(*pairs["loss"])
    grad_abs = grad_rel = grad_scaled = 0.0
    noise = pre_batchnorm_biases(cfg)  # exact gradient 0: held near 0 by the tests, not compared
    for name, (a, b) in pairs.items():
        if name.startswith("grad.") and name[len("grad.") :] not in noise:
            d_abs, d_rel = max_diffs(a, b)
            grad_abs, grad_rel = max(grad_abs, d_abs), max(grad_rel, d_rel)
            # the error measure the tolerance uses: |diff| / (atol + rtol |ref|) <= 1 passes
            t = tol(dtype, "grad", cfg)
            atol = t.atol_scale * np.abs(b).max() + t.floor
            grad_scaled = max(grad_scaled, float((np.abs(a - b) / (atol + t.rtol * np.abs(b))).max()))
    traj = trajectory_pair(cfg, dtype, steps=steps, api=api)
    if dtype == "float64":
        what = "params"
        t_abs = t_rel = 0.0
        for name, (a, b) in traj.items():
            if name.startswith("param.") and name.removeprefix("param.params.") not in noise:
                d_abs, d_rel = max_diffs(a, b)
                t_abs, t_rel = max(t_abs, d_abs), max(t_rel, d_rel)
    else:
        what = "losses"
        t_abs, t_rel = max_diffs(*traj["losses"])
    note = " (chaotic: see tolerances.CHAOTIC)" if (preset, dtype) in CHAOTIC else ""
    if noise:
        note += " (pre-BatchNorm biases excluded: exact gradient 0)"
    return (
        f"| {preset} | {dtype} | {api} | {loss_abs:.2e} | {loss_rel:.2e} | {grad_abs:.2e} | "
        f"{grad_rel:.2e} | {grad_scaled:.2f} | {what}: {t_abs:.2e} | {t_rel:.2e}{note} |"
    )


def _nnx_vs_linen_row(preset: str, dtype: str, steps: int) -> str:
    """Max |nnx - linen| of the forward, loss and gradients, and of the idiomatic and functional
    trajectories (float64: every parameter; float32: every step's loss)."""
    import numpy as np

    from parity_tests.harness import (
        _flat,
        forward_pair,
        jax_trajectory,
        setup_pair,
        trajectory_batches,
        trajectory_pair,
    )
    from parity_tests.sizes import parity_preset
    from parity_tests.tolerances import max_diffs

    cfg = parity_preset(preset)
    a, b = forward_pair(cfg, dtype, "linen"), forward_pair(cfg, dtype, "nnx")
    fwd = max(max_diffs(b[k][0], a[k][0])[0] for k in a)
    linen = {k: v[0] for k, v in trajectory_pair(cfg, dtype, steps=steps).items()}
    idiomatic = {k: v[0] for k, v in trajectory_pair(cfg, dtype, steps=steps, api="nnx").items()}
    params, batches = setup_pair(cfg, dtype)[1], trajectory_batches(cfg, dtype)
    losses, final = jax_trajectory(cfg, params, batches, steps, "nnx-functional")
    functional = {"losses": np.array(losses)} | {f"param.{k}": v for k, v in _flat(final).items()}
    names = [k for k in linen if k.startswith("param.")] if dtype == "float64" else ["losses"]
    worst = {
        style: max(max_diffs(run[k], linen[k])[0] for k in names)
        for style, run in (("idiomatic", idiomatic), ("functional", functional))
    }
    what = "params" if dtype == "float64" else "losses"
    return (
        f"| {preset} | {dtype} | {fwd:.2e} | {what}: {worst['idiomatic']:.2e} | "
        f"{what}: {worst['functional']:.2e} |"
    )


def _conv_rows(dtypes: list[str], apis: list[str]) -> list[str]:
    """One row per conv-layer case, dtype and API: worst output (and running-statistics) and gradient
    differences, and the worst |jax - torch| / (atol + rtol |torch|) of either (<= 1 passes)."""
    import numpy as np

    from parity_tests import conv_flatten_harness as cf
    from parity_tests import conv_harness as ch
    from parity_tests.tolerances import max_diffs, tol

    cases = [("conv", c) for c in ch.CONV_CASES] + [("conv_transpose", c) for c in ch.CONV_TRANSPOSE_CASES]
    cases += [("batchnorm", "train 3 steps + eval"), ("flatten", "conv-fc-fc-convt")]
    rows = []
    for layer, case in cases:
        for dtype in dtypes:
            for api in apis:
                if layer == "batchnorm":
                    pairs = ch.batchnorm_pair(dtype, api)
                elif layer == "flatten":
                    pairs = cf.flatten_pair(dtype, api)
                else:
                    pairs = ch.conv_pair(layer, case, dtype, api)
                worst = {"out": [0.0, 0.0], "grad": [0.0, 0.0]}
                scaled = 0.0
                for name, (a, b) in pairs.items():
                    kind = ch.tol_kind(name)
                    d_abs, d_rel = max_diffs(a, b)
                    w = worst["grad" if kind == "grad" else "out"]
                    w[0], w[1] = max(w[0], d_abs), max(w[1], d_rel)
                    t = tol(dtype, kind)
                    atol = t.atol_scale * float(np.abs(b).max()) + t.floor
                    scaled = max(scaled, float((np.abs(a - b) / (atol + t.rtol * np.abs(b))).max()))
                (o_abs, o_rel), (g_abs, g_rel) = worst["out"], worst["grad"]
                rows.append(
                    f"| {layer} | {case} | {dtype} | {api} | {o_abs:.2e} | {o_rel:.2e} | {g_abs:.2e} | "
                    f"{g_rel:.2e} | {scaled:.2f} |"
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown parity table to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="", help="comma-separated preset names (default: all)")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument(
        "--apis", default="linen,nnx", help="JAX model APIs: linen, nnx (NNX also adds NNX vs Linen)"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--precision", default="highest", choices=["highest", "high", "default"])
    parser.add_argument(
        "--tables", default="models,conv", help="models (per preset, then NNX vs Linen), conv (layers alone)"
    )
    args = parser.parse_args(argv)
    tables = {t for t in args.tables.split(",") if t}
    if tables - {"models", "conv"}:
        print(
            f"error: unknown table(s) {sorted(tables - {'models', 'conv'})}; known: models, conv",
            file=sys.stderr,
        )
        return 2
    _configure(args.precision)
    import jax
    import torch

    from jax_vae.common.config.presets import PRESETS

    presets = [p for p in args.presets.split(",") if p] or list(PRESETS)
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        print(f"error: unknown preset(s) {unknown}; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    print(
        f"Parity report: jax {jax.__version__} ({jax.default_backend()}, matmul precision "
        f"{args.precision}) vs torch {torch.__version__}; python {platform.python_version()}; "
        f"{args.steps}-step trajectories.\n"
    )
    apis = [a for a in args.apis.split(",") if a]
    if "models" in tables:
        print(
            "| preset | dtype | api | loss max abs | loss max rel | grad max abs | grad max rel | "
            "grad err / tol | trajectory max abs | trajectory max rel |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for preset in presets:
            for dtype in args.dtypes.split(","):
                for api in apis:
                    print(_row(preset, dtype, args.steps, api), flush=True)
        print(
            "\ngrad err / tol: worst |jax - torch| / (atol + rtol |torch|) over every gradient "
            "element (<= 1 passes). Trajectory: float64 compares every parameter after the last "
            "step, float32 every step's loss. api: the JAX half's model API (linen: models.VAE params; "
            "nnx: nnx_models.VAE, trained by the idiomatic nnx.Optimizer step)."
        )
        if "nnx" in apis:
            print(
                "\nNNX vs Linen (same device, dtype, weights and eps; max |nnx - linen|; 0 is every bit):\n\n"
                "| preset | dtype | forward, loss, grads | idiomatic trajectory | functional trajectory |\n"
                "|---|---|---|---|---|"
            )
            for preset in presets:
                for dtype in args.dtypes.split(","):
                    print(_nnx_vs_linen_row(preset, dtype, args.steps), flush=True)
    if "conv" in tables:
        print(
            "\nConvolution layers alone (parity_tests/conv_harness.py: batch 4, 3 -> 5 channels, "
            "8x9 inputs, 4x5 for transposed convs; outputs include BatchNorm's running statistics):\n\n"
            "| layer | case | dtype | api | output max abs | output max rel | grad max abs | grad max rel | "
            "err / tol |\n|---|---|---|---|---|---|---|---|---|"
        )
        for row in _conv_rows(args.dtypes.split(","), apis):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
