"""Framework-free parts of the evaluation, shared by jax_vae/evaluate.py and its torch twin:
sample chunking, the evaluation data (with its binarization) and the per-image summary, in nats.

Numpy only: torch_reference/evaluate.py imports this module, not the JAX one.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from jax_vae.config import VAEConfig
from jax_vae.data import binarize, derive_seed, load_dataset, load_split

ROW_BUDGET = 32768        # images x samples decoded at once: 32768 x 784 float32 logits ~ 100 MB
EVAL_BINARIZATION_SEED = 0
GREY_NOTE = ("Bernoulli likelihood of grey-level pixels is not a normalized density: the numbers are "
             "what the objective reports, not a log-likelihood")


def chunking(k: int, batch_size: int, chunk: int | None = None) -> tuple[int, int]:
    """(n_chunks, chunk): near-equal chunks of at most `chunk` (default ROW_BUDGET // batch) samples."""
    if k < 1 or batch_size < 1 or (chunk is not None and chunk < 1):
        raise ValueError(f"need k, batch_size, chunk >= 1; got k={k}, batch_size={batch_size}, chunk={chunk}")
    cap = max(1, ROW_BUDGET // batch_size) if chunk is None else chunk
    n_chunks = -(-k // min(cap, k))
    return n_chunks, -(-k // n_chunks)


def check_evaluable(cfg: VAEConfig) -> None:
    """log p(x) needs log-densities: a Bernoulli likelihood and the Gaussian q with analytic KL."""
    if cfg.kl != "analytic" or not cfg.likelihood.startswith("bce"):
        raise ValueError(f"{cfg.name}: log p(x) needs a Bernoulli likelihood and a Gaussian q "
                         f"(likelihood={cfg.likelihood!r}, kl={cfg.kl!r} are not log-densities)")


def eval_data(cfg: VAEConfig, data_dir: str | os.PathLike | None = None, split: str = "test",
              seed: int = EVAL_BINARIZATION_SEED, download: bool = True) -> tuple[np.ndarray, str]:
    """(x float32 [N, D], description of its binarization) for evaluating `cfg`.

    dynamic: the split binarized ONCE, stochastically, with derive_seed(seed, 1), so every run is
    scored on the same binary images; static: the loader's fixed draw for the preset's seed (the one
    training saw); none: grey values as they are.
    """
    if cfg.binarization == "static":
        data = load_dataset(cfg.dataset, data_dir, "static", cfg.seed, download)
        return data[split], f"static (loader's fixed draw, seed {cfg.seed})"
    x, _ = load_split(cfg.dataset, split, data_dir, download)
    if cfg.binarization == "dynamic":
        return binarize(x, derive_seed(seed, 1)), f"dynamic (test set binarized once, seed {seed})"
    return x, "none (grey values)"


def summarize(stats: dict[str, np.ndarray], k: int, binarization: str, cfg: VAEConfig
              ) -> dict[str, Any]:
    """Per-image means (and standard errors) of -ELBO = recon + KL and of -log p_k(x), in nats."""
    neg_elbo = stats["recon"] + stats["kl"]
    nll = -stats["log_px"]
    n = nll.shape[0]
    sem = lambda v: float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    result = {"neg_elbo": float(neg_elbo.mean()), "neg_elbo_sem": sem(neg_elbo),
              "iwae_nll": float(nll.mean()), "iwae_nll_sem": sem(nll),
              "recon": float(stats["recon"].mean()), "kl": float(stats["kl"].mean()),
              "k": k, "num_images": n, "binarization": binarization, "units": "nats per image",
              "preset": cfg.name}
    if binarization.startswith("none"):
        result["note"] = GREY_NOTE
    return result
