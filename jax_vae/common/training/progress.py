"""What a run shows while it trains: the step records, the progress bar and the --verbose lines.

A step record is written every `log_every` steps (metrics.jsonl, jax_vae.common.runs.folder.STEP_KEYS); the
bar (a terminal only) shows the newest step's loss terms and latent statistics; `--verbose` prints
each step record as one line on stderr. Both come when a chunk of steps ends.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from jax_vae.common.metrics import StepMetrics
from jax_vae.common.runs import folder as runs
from jax_vae.common.training import plan

# The progress bar's postfix (label: StepMetrics field), from the newest step.
POSTFIX = {
    "loss": "loss",
    "recon": "recon",
    "kl": "kl",
    "mu": "mu_mean",
    "lv_std": "logvar_std",
    "lv_mean": "logvar_mean",
}


def step_records(
    chunk: plan.Chunk, m: StepMetrics[np.ndarray], seconds: float, log_every: int
) -> list[dict[str, Any]]:
    """A "step" record every `log_every` steps, up to the first non-finite one.
    chunk_images_per_s is the whole chunk's images over its wall time (per-step times are not taken)."""
    ok = np.asarray(m.finite, bool)
    good = chunk.num_steps if ok.all() else int(np.argmin(ok))
    ips = chunk.num_steps * chunk.batch_size / max(seconds, 1e-9)
    return [
        {
            "kind": "step",
            "step": chunk.start + i + 1,
            "epoch": chunk.epoch + 1,
            "loss": m.loss[i],
            "recon": m.recon[i],
            "kl": m.kl[i],
            "mu_mean": m.mu_mean[i],
            "logvar_std": m.logvar_std[i],
            "logvar_mean": m.logvar_mean[i],
            "chunk_images_per_s": ips,
        }
        for i in range(good)
        if (chunk.start + i + 1) % log_every == 0
    ]


class Bar(Protocol):
    """What the loop uses of a tqdm bar (tqdm has no type hints)."""

    n: int  # the bar's position: steps done

    def update(self, n: int = 1) -> object: ...
    def set_postfix(self, ordered_dict: Mapping[str, object] | None = None, refresh: bool = True) -> None: ...
    def close(self) -> None: ...


def bar(total: int, initial: int, desc: str, show: bool) -> Bar:
    """The progress bar over the run's steps (stderr; a no-op bar when not shown)."""
    progress: Bar = tqdm(
        total=total, initial=initial, unit="step", desc=desc, dynamic_ncols=True, disable=not show, leave=True
    )
    return progress


def postfix(m: StepMetrics[np.ndarray]) -> dict[str, str]:
    """The bar's postfix: the newest step's value of each POSTFIX field."""
    return {label: f"{float(getattr(m, field)[-1]):.4g}" for label, field in POSTFIX.items()}


def echo(records: list[dict[str, Any]]) -> None:
    """--verbose: each step record as one line on stderr, above the progress bar."""
    for record in records:
        tqdm.write(runs.step_line(record), file=sys.stderr)
