"""Framework-free parts of the evaluation, shared by jax_vae/evaluate.py and its torch twin:
sample chunking, the evaluation data (with its binarization) and the per-image summary, in nats.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from jax_vae.common.backends import Backend, Weights
from jax_vae.common.config.options import EvalOptions
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig, apply_overrides, to_dict
from jax_vae.common.data.catalog import EVAL_BINARIZATION_SEED, canonical_name
from jax_vae.common.data.datasets import binarize_for_evaluation, load_dataset, load_split, threshold
from jax_vae.common.errors import RunError
from jax_vae.common.files import atomic_write_text, check_writable
from jax_vae.common.runs import folder as runs
from jax_vae.common.weights import sources
from jax_vae.common.weights.formats import config_of

ROW_BUDGET = 32768  # images x samples decoded at once: 32768 x 784 float32 logits ~ 100 MB
CPU_EAGER_ROW_BUDGET = 4096  # eager torch on CPU: fresh 100 MB temporaries cost page faults (measured
# 1.6x slower than 4096 rows on iwae-paper); XLA reuses its buffers
GREY_NOTE = (
    "Bernoulli likelihood of grey-level pixels is not a normalized density: the numbers are "
    "what the objective reports, not a log-likelihood"
)


def chunking(
    k: int, batch_size: int, chunk: int | None = None, row_budget: int = ROW_BUDGET
) -> tuple[int, int]:
    """(n_chunks, chunk): near-equal chunks of at most `chunk` (default row_budget // batch) samples."""
    if k < 1 or batch_size < 1 or (chunk is not None and chunk < 1):
        raise ValueError(f"need k, batch_size, chunk >= 1; got k={k}, batch_size={batch_size}, chunk={chunk}")
    cap = max(1, row_budget // batch_size) if chunk is None else chunk
    n_chunks = -(-k // min(cap, k))
    return n_chunks, -(-k // n_chunks)


def check_evaluable(cfg: VAEConfig) -> None:
    """log p(x) needs log-densities: a Bernoulli likelihood and the Gaussian q (analytic KL, or its
    one-sample estimate monte_carlo: the -ELBO column then reports the analytic KL, same expectation)."""
    if cfg.kl not in ("analytic", "monte_carlo") or not cfg.likelihood.startswith("bce"):
        raise ValueError(
            f"{cfg.name}: log p(x) needs a Bernoulli likelihood and a Gaussian q "
            f"(likelihood={cfg.likelihood!r}, kl={cfg.kl!r} are not log-densities)"
        )


def eval_data(
    cfg: VAEConfig,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    seed: int = EVAL_BINARIZATION_SEED,
    download: bool = True,
) -> tuple[np.ndarray, str]:
    """(x float32 [N, D], description of its binarization) for evaluating `cfg`.

    dynamic: the split binarized ONCE, stochastically, with derive_seed(seed, 1), so every run is
    scored on the same binary images; static: the loader's fixed draw for the preset's seed (the one
    training saw); none: grey values as they are.
    """
    if cfg.binarization == "static":
        data = load_dataset(
            cfg.dataset, data_dir, "static", cfg.seed, download, cfg.test_fraction, cfg.resize
        )
        return _fits(data[split], cfg), f"static (loader's fixed draw, seed {cfg.seed})"
    x = _fits(load_split(cfg.dataset, split, data_dir, download, cfg.test_fraction, cfg.resize)[0], cfg)
    if cfg.binarization == "threshold":
        return threshold(x), "threshold (x > 0.5, fixed)"
    if cfg.binarization == "dynamic":
        return binarize_for_evaluation(x, seed), f"dynamic (test set binarized once, seed {seed})"
    return x, "none (grey values)"


def _fits(x: np.ndarray, cfg: VAEConfig) -> np.ndarray:
    """x [N, D] when D is the run's input_dim (the user's files may have changed since training)."""
    if x.shape[1] != cfg.input_dim:
        raise RunError(
            f"{cfg.dataset} now has {x.shape[1]} pixels per image; the run was trained on {cfg.input_dim}"
        )
    return x


def summarize(stats: dict[str, np.ndarray], k: int, binarization: str, cfg: VAEConfig) -> dict[str, Any]:
    """Per-image means (and standard errors) of -ELBO = recon + KL and of -log p_k(x), in nats."""
    neg_elbo = stats["recon"] + stats["kl"]
    nll = -stats["log_px"]
    n = nll.shape[0]

    def sem(v: np.ndarray) -> float:
        return float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    with np.errstate(invalid="ignore", over="ignore"):  # diverged weights: inf/nan, counted below
        result: dict[str, Any] = {
            "neg_elbo": float(neg_elbo.mean()),
            "neg_elbo_sem": sem(neg_elbo),
            "iwae_nll": float(nll.mean()),
            "iwae_nll_sem": sem(nll),
            "recon": float(stats["recon"].mean()),
            "kl": float(stats["kl"].mean()),
        }
    result |= {
        "non_finite_images": int((~(np.isfinite(neg_elbo) & np.isfinite(nll))).sum()),
        "k": k,
        "num_images": n,
        "binarization": binarization,
        "units": "nats per image",
        "preset": cfg.name,
    }
    if binarization.startswith("none"):
        result["note"] = GREY_NOTE
    return result


def run_config(meta: dict[str, Any], source: str | os.PathLike[str]) -> VAEConfig:
    """The VAEConfig a checkpoint was trained with (its meta's 'config'), if log p(x) is defined for it."""
    cfg = config_of(meta, source)
    try:
        check_evaluable(cfg)
    except ValueError as err:
        raise RunError(str(err)) from None
    return cfg


def finish(
    result: dict[str, Any],
    *,
    framework: str,
    source: str | os.PathLike[str],
    step: int | None,
    seed: int,
    seconds: float,
    device: str,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Add where/how the numbers came from; write them as JSON to `out`, or by default to
    <run>/evaluation-k<k>.json when `source` is a run folder. Returns the record."""
    source = Path(source)
    record = {
        "framework": framework,
        "source": str(source),
        "step": step,
        "seed": seed,
        "device": device,
        "eval_s": seconds,
        **result,
    }
    path = report_path(source, result["k"], out)
    if path is not None:
        atomic_write_text(path, runs.strict_json(record, indent=2) + "\n")
        record["report"] = str(path)
    return record


def report_path(source: str | os.PathLike[str], k: int, out: str | os.PathLike[str] | None) -> Path | None:
    """Where `finish` writes the report: `out`, else <run>/evaluation-k<k>.json for a run folder."""
    source = Path(source)
    if out:
        return Path(out)
    return source / f"evaluation-k{k}.json" if (source / runs.CONFIG_FILE).is_file() else None


def trained_data_dir(source: str | os.PathLike[str]) -> str | None:
    """The data folder the run holding `source` (a run folder, its checkpoints/ or a checkpoint in
    it) was trained on, when config.json records one that still exists."""
    for folder in (Path(source), *Path(source).parents[:2]):
        if (folder / runs.CONFIG_FILE).is_file():
            return runs.recorded_data_dir(runs.read_run(folder))
    return None


def load_weights(
    backend: Backend, source: str | os.PathLike[str], opts: EvalOptions
) -> tuple[Weights, dict[str, Any]]:
    """(params in `backend`'s layout, meta with the config to score): a run / checkpoint / export of
    the backend's framework, or with opts.source any weight file in that source's layout."""
    if opts.source is None:
        params, meta = backend.load_params(Path(source), opts.step)
    else:
        if opts.step is not None:
            raise RunError("--step picks a checkpoint of a run; --weights is one set of weights")
        try:
            base = get_preset(opts.preset) if opts.preset else None
        except KeyError as err:
            raise RunError(err.args[0]) from None
        state, cfg, meta = sources.load(Path(source), opts.source, base)
        params, meta = backend.from_state_dict(state, cfg), {**meta, "config": to_dict(cfg)}
    if opts.dataset is not None:
        try:
            cfg = apply_overrides(run_config(meta, source), {"dataset": canonical_name(opts.dataset)})
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(err.args[0] if err.args else str(err)) from None
        meta = {**meta, "config": to_dict(cfg)}
    return params, meta


def evaluate_run(backend: Backend, source: str | os.PathLike[str], opts: EvalOptions) -> dict[str, Any]:
    """`evaluate`: a run folder / checkpoint / params export of `backend`'s framework, scored on its
    preset's test split (binarized as eval_data says) and recorded as JSON (see `finish`)."""
    path = report_path(source, opts.k, opts.out)
    if path is not None:  # before the work: an unwritable --out must not cost the evaluation
        check_writable(path, "report")
    params, meta = load_weights(backend, source, opts)
    cfg = run_config(meta, source)
    data_dir = opts.data_dir if opts.data_dir is not None else trained_data_dir(source)
    x, binarization = eval_data(cfg, data_dir, download=opts.download)
    x = x[: opts.num_images] if opts.num_images else x  # [N, D]
    if x.shape[1] != cfg.input_dim:
        raise RunError(
            f"{source}: the model takes {cfg.input_dim} pixels per image, "
            f"{cfg.dataset} images have {x.shape[1]}"
        )
    t0 = time.perf_counter()
    result, device = backend.evaluate(params, x, cfg, binarization, opts)
    if result["non_finite_images"]:
        raise RunError(
            f"{source}: the weights of step {meta.get('step')} give a non-finite -ELBO or IWAE-{opts.k} "
            f"NLL on {result['non_finite_images']} of {result['num_images']} test images (they "
            "diverged); evaluate an earlier checkpoint with --step"
        )
    return finish(
        result,
        framework=backend.framework,
        source=source,
        step=meta.get("step"),
        seed=opts.seed,
        seconds=time.perf_counter() - t0,
        out=opts.out,
        device=device,
    )


def report_line(r: dict[str, Any]) -> str:
    """One line per evaluation: -ELBO and IWAE-k NLL (+- standard error) in nats per image."""
    where = f"step {r['step']}" if r.get("step") is not None else f"weights {Path(r['source']).name}"
    line = (
        f"{r['framework']} {r['preset']} ({where}): test -ELBO {r['neg_elbo']:.2f} "
        f"+- {r['neg_elbo_sem']:.2f}, IWAE-{r['k']} NLL {r['iwae_nll']:.2f} +- {r['iwae_nll_sem']:.2f} "
        f"nats/image over {r['num_images']} images; binarization {r['binarization']}; "
        f"{r['eval_s']:.1f} s on {r['device']}"
    )
    if r.get("note"):
        line += f"\n  note: {r['note']}"
    if r.get("report"):
        line += f"\n  wrote {r['report']}"
    return line
