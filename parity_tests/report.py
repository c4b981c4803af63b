"""Parity report: per preset and dtype, max abs / rel JAX-vs-torch differences of the loss, every
gradient and the 100-step trajectory, as a Markdown table.

    python -m parity_tests.report [--presets a,b] [--steps 100] [--precision highest|default]
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


def _row(preset: str, dtype: str, steps: int) -> str:
    import numpy as np

    from jax_vae.common.presets import PRESETS
    from parity_tests.harness import forward_pair, trajectory_pair
    from parity_tests.tolerances import CHAOTIC, max_diffs, tol

    cfg = PRESETS[preset]
    pairs = forward_pair(cfg, dtype)
    loss_abs, loss_rel = max_diffs(*pairs["loss"])
    grad_abs = grad_rel = grad_scaled = 0.0
    for name, (a, b) in pairs.items():
        if name.startswith("grad."):
            d_abs, d_rel = max_diffs(a, b)
            grad_abs, grad_rel = max(grad_abs, d_abs), max(grad_rel, d_rel)
            # the error measure the tolerance uses: |diff| / (atol + rtol |ref|) <= 1 passes
            t = tol(dtype, "grad")
            atol = t.atol_scale * np.abs(b).max() + t.floor
            grad_scaled = max(grad_scaled, float((np.abs(a - b) / (atol + t.rtol * np.abs(b))).max()))
    traj = trajectory_pair(cfg, dtype, steps=steps)
    if dtype == "float64":
        what = "params"
        t_abs = t_rel = 0.0
        for name, (a, b) in traj.items():
            if name.startswith("param."):
                d_abs, d_rel = max_diffs(a, b)
                t_abs, t_rel = max(t_abs, d_abs), max(t_rel, d_rel)
    else:
        what = "losses"
        t_abs, t_rel = max_diffs(*traj["losses"])
    note = " (chaotic: see tolerances.CHAOTIC)" if (preset, dtype) in CHAOTIC else ""
    return (
        f"| {preset} | {dtype} | {loss_abs:.2e} | {loss_rel:.2e} | {grad_abs:.2e} | "
        f"{grad_rel:.2e} | {grad_scaled:.2f} | {what}: {t_abs:.2e} | {t_rel:.2e}{note} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown parity table to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="", help="comma-separated preset names (default: all)")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--precision", default="highest", choices=["highest", "high", "default"])
    args = parser.parse_args(argv)
    _configure(args.precision)
    import jax
    import torch

    from jax_vae.common.presets import PRESETS

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
    print(
        "| preset | dtype | loss max abs | loss max rel | grad max abs | grad max rel | "
        "grad err / tol | trajectory max abs | trajectory max rel |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in presets:
        for dtype in args.dtypes.split(","):
            print(_row(preset, dtype, args.steps), flush=True)
    print(
        "\ngrad err / tol: worst |jax - torch| / (atol + rtol |torch|) over every gradient "
        "element (<= 1 passes). Trajectory: float64 compares every parameter after the last "
        "step, float32 every step's loss."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
