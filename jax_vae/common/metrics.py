"""What every train step reports and how an epoch sums it: the one schema of metrics.jsonl records.

`StepMetrics` is what each framework's jitted (or eager) step returns; `STEP_KEYS` / `EPOCH_KEYS` are
the fields of the "step" and "epoch" records (jax_vae.common.runs.folder writes them); `EpochSums`
accumulates a running epoch and is checkpointed with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

STEP_KEYS = (
    "kind",
    "step",
    "epoch",
    "loss",
    "recon",
    "kl",
    "mu_mean",
    "logvar_std",
    "logvar_mean",
    "chunk_images_per_s",
)
T = TypeVar("T")


class StepMetrics(NamedTuple, Generic[T]):
    """What a train step reports, as arrays of either framework (a chunk: numpy [S] per field).

    loss, recon, kl: per-image means over the batch (the unit of metrics.jsonl); mu_mean, logvar_mean:
    the means of the posterior mean mu and of logvar = log sigma^2 (computed from sigma when
    cfg.scale_param = "sigma") over the batch's B * Z entries; logvar_std: the unbiased (n - 1,
    n = B * Z, as Lua torch's std()) standard deviation of those logvar entries (0 when n = 1);
    batch_loss: the objective as differentiated, reduced over the batch by cfg.reduction (a sum or a mean).
    """

    loss: T
    recon: T
    kl: T
    mu_mean: T
    logvar_std: T
    logvar_mean: T
    batch_loss: T
    finite: T


EPOCH_KEYS = (
    "kind",
    "epoch",
    "step",
    "train_loss",
    "recon",
    "kl",
    "test_loss",
    "test_recon",
    "test_kl",
    "images_per_s",
    "train_s",
    "wall_s",
)


@dataclasses.dataclass
class EpochSums:
    """Running sums over the epoch in progress (checkpointed in the meta, so a resume continues them)."""

    loss: float = 0.0
    recon: float = 0.0
    kl: float = 0.0
    images: int = 0
    train_s: float = 0.0

    def add(self, m: StepMetrics[np.ndarray], batch_size: int, seconds: float) -> None:
        """Add a finished chunk of len(m.loss) steps: per-image means [S] times the batch size."""
        for key in ("loss", "recon", "kl"):
            total = float(np.sum(np.asarray(getattr(m, key), np.float64)) * batch_size)
            setattr(self, key, getattr(self, key) + total)
        self.images += len(m.loss) * batch_size
        self.train_s += seconds

    def record(self, epoch: int, step: int, test: dict[str, float], wall_s: float) -> dict[str, Any]:
        """The metrics.jsonl "epoch" record."""
        return {
            "kind": "epoch",
            "epoch": epoch,
            "step": step,
            "train_loss": self.loss / self.images,
            "recon": self.recon / self.images,
            "kl": self.kl / self.images,
            **test,
            "images_per_s": self.images / max(self.train_s, 1e-9),
            "train_s": self.train_s,
            "wall_s": wall_s,
        }
