"""The one table of parity tolerances, each with its reason, and the comparison helper.

A check passes when |jax - torch| <= atol + rtol * |torch| elementwise (numpy.allclose semantics).
atol is relative to the tensor's scale: atol = atol_scale * max|torch| (plus a floor), so it only
absorbs cancellation in elements that are tiny next to the rest of the same tensor.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tol:
    rtol: float
    atol_scale: float     # atol = atol_scale * max|reference| + floor
    floor: float
    reason: str


TOLERANCES: dict[tuple[str, str], Tol] = {
    ("float64", "forward"): Tol(1e-10, 1e-12, 1e-300,
        "same math, different BLAS blocking: ~1e-15 relative per op, a few ops deep"),
    ("float64", "loss"): Tol(1e-10, 0.0, 1e-300,
        "a sum of B*D terms: summation order differs, error ~ 1e-16 * sqrt(B*D)"),
    ("float64", "grad"): Tol(1e-10, 1e-10, 1e-300,
        "gradient elements that cancel to ~0 (dead ReLU columns, saturated sigmoids) have no "
        "meaningful relative error; atol is 1e-10 of the tensor's largest element"),
    ("float64", "trajectory_params"): Tol(1e-9, 1e-9, 1e-300,
        "100 Adam steps divide by sqrt(v) + eps, which amplifies 1e-16 rounding of tiny v; "
        "atol is 1e-9 of the tensor's largest element"),
    ("float32", "forward"): Tol(1e-5, 1e-6, 1e-30,
        "float32 eps ~ 1.2e-7; BLAS reductions over up to 1152 inputs in a different order"),
    ("float32", "loss"): Tol(1e-5, 0.0, 1e-30,
        "a float32 sum of B*D terms in a different order"),
    ("float32", "grad"): Tol(1e-4, 1e-5, 1e-30,
        "float32 backward: outer products summed over the batch in a different order; elements "
        "near zero get atol = 1e-5 of the tensor's largest element"),
    ("float32", "trajectory_loss"): Tol(1e-4, 0.0, 1e-30,
        "losses of 100 float32 Adam steps: parameters drift at the rounding level, losses agree"),
}


def tol(dtype: str, kind: str) -> Tol:
    """Look up the tolerance for a dtype name ('float32'/'float64') and check kind."""
    return TOLERANCES[(dtype, kind)]


def max_diffs(jax_value, torch_value) -> tuple[float, float]:
    """(max abs diff, max rel diff with a 1e-30 floor)."""
    a = np.asarray(jax_value, dtype=np.float64)
    b = np.asarray(torch_value, dtype=np.float64)
    diff = np.abs(a - b)
    return float(diff.max(initial=0.0)), float((diff / np.maximum(np.abs(b), 1e-30)).max(initial=0.0))


def assert_close(name: str, jax_value, torch_value, t: Tol) -> None:
    """Raise AssertionError naming the tensor `name` if jax and torch differ beyond t."""
    a = np.asarray(jax_value, dtype=np.float64)
    b = np.asarray(torch_value, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{name}: shape jax {a.shape} != torch {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise AssertionError(f"{name}: non-finite values (jax finite={np.isfinite(a).all()}, "
                             f"torch finite={np.isfinite(b).all()})")
    atol = t.atol_scale * float(np.abs(b).max(initial=0.0)) + t.floor
    bad = np.abs(a - b) > atol + t.rtol * np.abs(b)
    if bad.any():
        idx = np.unravel_index(np.argmax(np.abs(a - b) - t.rtol * np.abs(b)), a.shape) if a.ndim else ()
        abs_d, rel_d = max_diffs(a, b)
        raise AssertionError(
            f"{name} diverged: {int(bad.sum())}/{bad.size} elements beyond rtol={t.rtol:g}, "
            f"atol={atol:.3g}; worst at {tuple(int(i) for i in idx)}: jax={a[idx]!r} torch={b[idx]!r}; "
            f"max abs {abs_d:.3g}, max rel {rel_d:.3g}")
