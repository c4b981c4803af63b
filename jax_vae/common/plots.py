"""Framework-free figures for run folders (matplotlib, Agg backend): reconstructions, prior samples,
the latent manifold grid of 2-D latents, loss curves, and the overlay of several runs (`compare`).

Both frameworks pass a `decode(z [N, Z]) -> outputs [N, D]` and a `reconstruct(x [N, D]) -> outputs
[N, D]` (numpy in, numpy out); codes and inputs are drawn here, so JAX and PyTorch runs of the same
preset are drawn from the same codes and test images.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from jax_vae.common.config import VAEConfig  # noqa: E402

Decode = Callable[[np.ndarray], np.ndarray]
FRAMEWORK_COLORS = {"jax": "tab:blue", "torch": "tab:orange"}
STUTZ_GRID = (np.arange(20) - 9.5) * 0.1  # -0.95, -0.85, ..., 0.95 (vae.lua's manifold)


def image_shape(cfg: VAEConfig) -> tuple[int, int]:
    """(H, W) of a flattened square image; (1, D) when D is not a square."""
    side = math.isqrt(cfg.input_dim)
    return (side, side) if side * side == cfg.input_dim else (1, cfg.input_dim)


def to_pixels(outputs: np.ndarray, cfg: VAEConfig) -> np.ndarray:
    """Decoder outputs -> intensities in [0, 1]: probabilities as is, sigmoid of logits, clipped reals."""
    outputs = np.asarray(outputs, np.float64)
    if cfg.decoder_output == "logits":
        outputs = 1.0 / (1.0 + np.exp(-outputs))
    return np.clip(outputs, 0.0, 1.0)


def manifold_axis(cfg: VAEConfig, n: int = 20) -> np.ndarray:
    """Code values per latent axis: manifold_grid 'linear' is vae.lua's -0.95:0.1:0.95; 'quantile'
    the standard-normal quantiles of linspace(0.05, 0.95, n) (evenly spaced in prior mass)."""
    if cfg.manifold_grid == "linear":
        return STUTZ_GRID.copy()
    return np.array([statistics.NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])


def manifold_codes(axis: np.ndarray) -> np.ndarray:
    """Row-major grid codes [R*C, 2]: z1 along columns (left to right), z2 along rows (top = largest)."""
    z1, z2 = np.meshgrid(axis, axis[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=1).astype(np.float32)


def prior_codes(cfg: VAEConfig, n: int = 64, seed: int = 0) -> np.ndarray:
    """z ~ N(0, I): float32 [n, Z], the same for every run and framework of a given latent size."""
    return np.random.default_rng(seed).standard_normal((n, cfg.latent_dim)).astype(np.float32)


def tile(images: np.ndarray, rows: int, cols: int, shape: tuple[int, int], pad: int = 1) -> np.ndarray:
    """[rows*cols, H*W] -> one [rows*(H+pad)+pad, cols*(W+pad)+pad] canvas (padding = 0.5 grey)."""
    h, w = shape
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 0.5)
    for k, img in enumerate(images[: rows * cols]):
        r, c = divmod(k, cols)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w
        ] = img.reshape(h, w)
    return canvas


def _save_canvas(path: Path, canvas: np.ndarray, title: str, extent=None, labels=None) -> Path:
    """The canvas at an integer zoom (about 800 px wide, nearest-neighbour: no resampling blur)."""
    zoom = max(1, round(800 / canvas.shape[1]))
    w, h = canvas.shape[1] * zoom, canvas.shape[0] * zoom
    left, bottom, right, top = (72, 45, 15, 42) if labels else (8, 8, 8, 42)
    width, height = w + left + right, h + bottom + top
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((left / width, bottom / height, w / width, h / height))
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", extent=extent, aspect="auto")
    ax.set_title(title, fontsize=9)
    if labels is None:
        ax.axis("off")
    else:
        ax.set_xlabel(labels[0], fontsize=9)
        ax.set_ylabel(labels[1], fontsize=9)
        ax.tick_params(labelsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_images(
    image_dir: Path,
    cfg: VAEConfig,
    decode: Decode,
    reconstruct: Decode,
    test_x: np.ndarray,
    records: Sequence[dict[str, Any]],
    title: str,
) -> list[Path]:
    """reconstructions.png, samples.png, manifold.png (2-D latents) and curves.png; returns the paths."""
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    shape, paths = image_shape(cfg), []
    x = np.asarray(test_x[:16], np.float32)  # [16, D]
    rec = to_pixels(reconstruct(x), cfg)  # [16, D]
    pairs = np.concatenate([x[:8], rec[:8], x[8:16], rec[8:16]])  # rows: in, out, in, out
    paths.append(
        _save_canvas(
            image_dir / "reconstructions.png",
            tile(pairs, 4, 8, shape),
            f"{title}\ntest inputs (rows 1, 3), reconstructions at z = mean (rows 2, 4)",
        )
    )
    samples = to_pixels(decode(prior_codes(cfg)), cfg)  # [64, D]
    paths.append(
        _save_canvas(
            image_dir / "samples.png", tile(samples, 8, 8, shape), f"{title}\ndecoded samples z ~ N(0, I)"
        )
    )
    if cfg.latent_dim == 2:
        axis = manifold_axis(cfg)
        grid = to_pixels(decode(manifold_codes(axis)), cfg)  # [R*C, D]
        step = axis[1] - axis[0]
        extent = (axis[0] - step / 2, axis[-1] + step / 2, axis[0] - step / 2, axis[-1] + step / 2)
        paths.append(
            _save_canvas(
                image_dir / "manifold.png",
                tile(grid, len(axis), len(axis), shape),
                f"{title}\ndecoder over a {len(axis)}x{len(axis)} grid of codes",
                extent=extent,
                labels=("z1", "z2"),
            )
        )
    if records:
        paths.append(save_curves(image_dir / "curves.png", records, title))
    return paths


def _steps(records: Sequence[dict[str, Any]], kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
    return (
        (np.array([s for s, _ in rows]), np.array([v for _, v in rows], float))
        if rows
        else (np.array([]),) * 2
    )


def _epochs(records: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["epoch"], r[key]) for r in records if r.get("kind") == "epoch" and r.get(key) is not None]
    return (
        (np.array([e for e, _ in rows]), np.array([v for _, v in rows], float))
        if rows
        else (np.array([]),) * 2
    )


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points (shorter at the start)."""
    if len(values) == 0 or window <= 1:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def _focus(ax, series: Sequence[np.ndarray]) -> None:
    """y-limits that show the part of training curves after the first 5% of points (not the spike)."""
    tails = [v[len(v) // 20 :] for v in series if len(v) > 20]
    if tails:
        lo, hi = min(float(t.min()) for t in tails), max(float(t.max()) for t in tails)
        pad = 0.08 * (hi - lo) or 1.0
        ax.set_ylim(lo - pad, hi + pad)


def save_curves(path: Path, records: Sequence[dict[str, Any]], title: str) -> Path:
    """Train loss per logged step (raw and smoothed) and train/test loss per epoch."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    s, v = _steps(records, "step", "loss")
    if len(s):
        a.plot(s, v, color="0.75", lw=0.6, label="train (logged steps)")
        a.plot(s, smooth(v, max(1, len(v) // 50)), color="tab:blue", lw=1.2, label="smoothed")
        _focus(a, [v])
    a.set(xlabel="step", ylabel="loss per image", title="training loss")
    for key, style in (("train_loss", "-o"), ("test_loss", "-s")):
        e, v = _epochs(records, key)
        if len(e):
            b.plot(e, v, style, ms=3, label=key.replace("_", " "))
    b.set(xlabel="epoch", ylabel="loss per image", title="per epoch")
    b.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def save_compare(
    path: Path, runs: Sequence[tuple[str, str, Sequence[dict[str, Any]]]], title: str = ""
) -> Path:
    """Overlay runs given as (label, framework, records): test loss per epoch, smoothed train loss
    per step. Runs of one framework share a colour and differ by line style."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    styles, seen, curves = ["-", "--", ":", "-."], dict[str, int](), []
    for label, framework, records in runs:
        color = FRAMEWORK_COLORS.get(framework)
        ls = styles[seen.get(framework, 0) % len(styles)]
        seen[framework] = seen.get(framework, 0) + 1
        e, v = _epochs(records, "test_loss")
        if len(e):
            a.plot(e, v, ls, marker="o", ms=3, color=color, label=label)
        s, v = _steps(records, "step", "loss")
        if len(s):
            curves.append(smooth(v, max(1, len(v) // 50)))
            b.plot(s, curves[-1], ls, color=color, lw=1.0, label=label)
    _focus(b, curves)
    a.set(xlabel="epoch", ylabel="test loss per image", title="test loss (-ELBO)")
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.set(xlabel="step", ylabel="train loss per image", title="training loss (smoothed)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
