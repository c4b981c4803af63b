"""Framework-free figures for run folders (matplotlib's Agg canvas): reconstructions, prior samples,
the latent manifold grid of 2-D latents and loss curves (axes named by the run's objective and unit),
each written atomically; `compare` overlays several runs with the helpers here.

Both frameworks pass a `decode(z [N, Z]) -> outputs [N, D]` and a `reconstruct(x [N, D]) -> outputs
[N, D]` (numpy in, numpy out); codes and inputs are drawn here, so JAX and PyTorch runs of the same
preset are drawn from the same codes and test images.

matplotlib is imported when a figure is first made (not when this module is), and figures are
matplotlib's object API on an Agg canvas: no pyplot state, no change of the process's backend.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from jax_vae.common.config.vae_config import VAEConfig, to_dict
from jax_vae.common.files import atomic_write

if TYPE_CHECKING:  # matplotlib loads when a figure is made
    import numpy.typing as npt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Decode = Callable[[np.ndarray], np.ndarray]
FRAMEWORK_COLORS = {"jax": "tab:blue", "torch": "tab:orange"}
STUTZ_GRID = (np.arange(20) - 9.5) * 0.1  # -0.95, -0.85, ..., 0.95 (vae.lua's manifold)


def figure_formats() -> list[str]:
    """The file extensions matplotlib's Agg canvas writes (png, pdf, svg, jpg, ...), sorted."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def new_figure(figsize: tuple[float, float], dpi: float | None = None) -> Figure:
    """A matplotlib Figure on its own Agg canvas (no pyplot: nothing global to close or switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 80) -> Path:
    """Write `fig` atomically (files.atomic_write) in the format its extension names."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"

    def write(f: IO[bytes]) -> None:
        fig.savefig(f, format=fmt, dpi=dpi)

    atomic_write(path, write)
    return path


def integer_ticks(ax: Axes) -> None:
    """Whole numbers only on the x axis (steps, epochs)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def loss_label(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """(name, unit) of a run's test loss from its config fields: '-IWAE-k bound' (objective iwae),
    '-ELBO' (Bernoulli likelihood) or '<likelihood>+KL' (MSE objective); 'nats/image' or
    'per image, not nats'."""
    likelihood = str(cfg.get("likelihood", "bce_probs"))
    bernoulli = likelihood.startswith("bce")
    if cfg.get("objective") == "iwae":
        name = f"-IWAE-{cfg.get('num_samples', 1)} bound"
    else:
        name = "-ELBO" if bernoulli else f"{likelihood}+KL"
    return name, "nats/image" if bernoulli else "per image, not nats"


def train_loss_label(cfg: Mapping[str, Any]) -> str:
    """The training loss's axis label: the test loss's name, noting a KL weight other than 1."""
    name, unit = loss_label(cfg)
    beta, warmup = cfg.get("beta", 1.0), cfg.get("kl_warmup_steps", 0)
    weight = f", KL weight {beta:g}" + (f" after {warmup}-step warm-up" if warmup else "")
    return f"train {name}{weight if beta != 1 or warmup else ''} ({unit})"


def image_shape(cfg: VAEConfig) -> tuple[int, int]:
    """(H, W) of a flattened image: cfg.image_shape when set (the user's data), else a square of
    D / image_channels pixels; (1, D / C) when that is not a square."""
    if cfg.image_shape:
        return cfg.image_shape[0], cfg.image_shape[1]
    pixels = cfg.input_dim // cfg.image_channels
    side = math.isqrt(pixels)
    return (side, side) if side * side == pixels else (1, pixels)


def to_pixels(outputs: np.ndarray, cfg: VAEConfig) -> npt.NDArray[np.float64]:
    """Decoder outputs -> intensities in [0, 1]: probabilities as is, sigmoid of logits, clipped reals."""
    outputs = np.asarray(outputs, np.float64)
    if cfg.decoder_output == "logits":
        outputs = 1.0 / (1.0 + np.exp(-outputs))
    return np.asarray(np.clip(outputs, 0.0, 1.0))


def manifold_axis(cfg: VAEConfig, n: int = 20) -> np.ndarray:
    """Code values per latent axis: manifold_grid 'linear' is vae.lua's -0.95:0.1:0.95; 'quantile'
    the standard-normal quantiles of linspace(0.05, 0.95, n) (evenly spaced in prior mass)."""
    if cfg.manifold_grid == "linear":
        return STUTZ_GRID.copy()
    return np.array([statistics.NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])


def manifold_codes(axis: np.ndarray) -> npt.NDArray[np.float32]:
    """Row-major grid codes [R*C, 2]: z1 along columns (left to right), z2 along rows (top = largest)."""
    z1, z2 = np.meshgrid(axis, axis[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=1).astype(np.float32)


def prior_codes(cfg: VAEConfig, n: int = 64, seed: int = 0) -> npt.NDArray[np.float32]:
    """z ~ N(0, I): float32 [n, Z], the same for every run and framework of a given latent size."""
    return np.random.default_rng(seed).standard_normal((n, cfg.latent_dim)).astype(np.float32)


def tile(
    images: np.ndarray, rows: int, cols: int, shape: tuple[int, int], pad: int = 1, channels: int = 1
) -> np.ndarray:
    """[rows*cols, H*W*C] (flat H, W, C) -> one [rows*(H+pad)+pad, cols*(W+pad)+pad] canvas, with a
    trailing C axis when C > 1 (RGB); padding = 0.5 grey."""
    h, w = shape
    cell = (h, w) if channels == 1 else (h, w, channels)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *cell[2:]), 0.5)
    for k, img in enumerate(images[: rows * cols]):
        r, c = divmod(k, cols)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w
        ] = img.reshape(cell)
    return canvas


def _save_canvas(
    path: Path,
    canvas: np.ndarray,
    title: str,
    extent: tuple[float, float, float, float] | None = None,
    labels: tuple[str, str] | None = None,
) -> Path:
    """The canvas at an integer zoom (about 800 px wide, nearest-neighbour: no resampling blur)."""
    zoom = max(1, round(800 / canvas.shape[1]))
    w, h = canvas.shape[1] * zoom, canvas.shape[0] * zoom
    left, bottom, right, top = (72, 45, 15, 42) if labels else (8, 8, 8, 42)
    width, height = w + left + right, h + bottom + top
    fig = new_figure((width / 100, height / 100), dpi=100)
    ax = fig.add_axes((left / width, bottom / height, w / width, h / height))
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", extent=extent, aspect="auto")
    ax.set_title(title, fontsize=9)
    if labels is None:
        ax.axis("off")
    else:
        ax.set_xlabel(labels[0], fontsize=9)
        ax.set_ylabel(labels[1], fontsize=9)
        ax.tick_params(labelsize=8)
    return save_figure(fig, path, dpi=100)


def reconstruction_canvas(cfg: VAEConfig, reconstruct: Decode, test_x: np.ndarray) -> np.ndarray:
    """16 test inputs in rows 1 and 3, their reconstructions at z = mean below them: [4, 8] tiles."""
    x = np.asarray(test_x[:16], np.float32)  # [16, D]
    rec = to_pixels(reconstruct(x), cfg)  # [16, D]
    pairs = np.concatenate([x[:8], rec[:8], x[8:16], rec[8:16]])  # rows: in, out, in, out
    return tile(pairs, 4, 8, image_shape(cfg), channels=cfg.image_channels)


def samples_canvas(cfg: VAEConfig, decode: Decode) -> np.ndarray:
    """The decoded prior_codes(cfg): [8, 8] tiles."""
    samples = to_pixels(decode(prior_codes(cfg)), cfg)  # [64, D]
    return tile(samples, 8, 8, image_shape(cfg), channels=cfg.image_channels)


def manifold_canvas(cfg: VAEConfig, decode: Decode) -> tuple[np.ndarray, np.ndarray]:
    """(canvas, axis): the decoder over manifold_codes(axis) of a 2-D latent, [R, C] tiles."""
    axis = manifold_axis(cfg)
    grid = to_pixels(decode(manifold_codes(axis)), cfg)  # [R*C, D]
    return tile(grid, len(axis), len(axis), image_shape(cfg), channels=cfg.image_channels), axis


def canvases(
    cfg: VAEConfig, decode: Decode, reconstruct: Decode, test_x: np.ndarray
) -> dict[str, np.ndarray]:
    """write_images' grids as [H, W] ([H, W, C] for colour) arrays in [0, 1]: reconstruction, samples,
    manifold (2-D latents)."""
    grids = {
        "reconstruction": reconstruction_canvas(cfg, reconstruct, test_x),
        "samples": samples_canvas(cfg, decode),
    }
    if cfg.latent_dim == 2:
        grids["manifold"] = manifold_canvas(cfg, decode)[0]
    return grids


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
    paths = [
        _save_canvas(
            image_dir / "reconstructions.png",
            reconstruction_canvas(cfg, reconstruct, test_x),
            f"{title}\ntest inputs (rows 1, 3), reconstructions at z = mean (rows 2, 4)",
        ),
        _save_canvas(
            image_dir / "samples.png", samples_canvas(cfg, decode), f"{title}\ndecoded samples z ~ N(0, I)"
        ),
    ]
    if cfg.latent_dim == 2:
        canvas, axis = manifold_canvas(cfg, decode)
        step = axis[1] - axis[0]
        lo, hi = float(axis[0] - step / 2), float(axis[-1] + step / 2)
        paths.append(
            _save_canvas(
                image_dir / "manifold.png",
                canvas,
                f"{title}\ndecoder over a {len(axis)}x{len(axis)} grid of codes",
                extent=(lo, hi, lo, hi),
                labels=("z1", "z2"),
            )
        )
    if records:
        paths.append(save_curves(image_dir / "curves.png", records, title, to_dict(cfg)))
    return paths


def series(records: Sequence[dict[str, Any]], kind: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the records of `kind` that hold a value for `y`, e.g. ("step", "step", "loss")."""
    rows = [(r[x], r[y]) for r in records if r.get("kind") == kind and r.get(y) is not None]
    return np.array([p for p, _ in rows]), np.array([v for _, v in rows], float)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points (shorter at the start)."""
    if len(values) == 0 or window <= 1:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return np.asarray((c[idx] - c[lo]) / (idx - lo))


def focus(ax: Axes, curves: Sequence[np.ndarray], also: np.ndarray | None = None) -> None:
    """y-limits that show the part of training curves after the first 5% of points (not the spike),
    widened to keep the values `also` (e.g. test losses drawn on the same axes) in view."""
    tails = [v[len(v) // 20 :] for v in curves if len(v) > 20]
    if tails:
        kept = [*tails, also] if also is not None and len(also) else tails
        lo, hi = min(float(t.min()) for t in kept), max(float(t.max()) for t in kept)
        pad = 0.08 * (hi - lo) or 1.0
        ax.set_ylim(lo - pad, hi + pad)


def finish(fig: Figure, axes: Sequence[Axes], title: str) -> Figure:
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


FEW_POINTS = 30  # curves with at most this many points are drawn with markers (short runs)


def curves_figure(
    records: Sequence[dict[str, Any]], title: str, cfg: Mapping[str, Any] | None = None
) -> Figure:
    """Train loss per logged step (raw, smoothed, test loss at each epoch end) and train/test loss per
    epoch, axes labelled by the objective of `cfg` (config fields); a short run's points are marked."""
    cfg = cfg or {}
    name, unit = loss_label(cfg)
    fig = new_figure((9, 3.4))
    a, b = fig.subplots(1, 2)
    s, v = series(records, "step", "step", "loss")
    if len(s):
        few = len(s) <= FEW_POINTS
        a.plot(s, v, "-o" if few else "-", color="0.6", ms=3, lw=0.6, label="train (logged steps)")
        window = len(v) // 50
        if window > 1:
            a.plot(s, smooth(v, window), color="tab:blue", lw=1.2, label=f"smoothed ({window} points)")
    ts, tv = series(records, "epoch", "step", "test_loss")
    if len(ts):
        a.plot(ts, tv, "s", color="tab:orange", ms=4, label="test (epoch end)")
    focus(a, [v] if len(s) else [], tv)
    a.set(xlabel="step", title="training loss")
    a.set_ylabel(train_loss_label(cfg), fontsize=8)
    integer_ticks(a)
    _epoch_panel(b, records, f"{name} ({unit})")
    return finish(fig, (a, b), title)


def save_curves(
    path: Path, records: Sequence[dict[str, Any]], title: str, cfg: Mapping[str, Any] | None = None
) -> Path:
    """curves_figure written atomically at `path`."""
    return save_figure(curves_figure(records, title, cfg), path)


def _epoch_panel(ax: Axes, records: Sequence[dict[str, Any]], ylabel: str) -> None:
    """Train and test loss per epoch, markers joined by lines, the last values written beside their
    points; one epoch: its two labelled points under a note with the test recon and KL."""
    epochs = [r for r in records if r.get("kind") == "epoch"]
    values = []
    for key, style, color in (("train_loss", "-o", "tab:blue"), ("test_loss", "-s", "tab:orange")):
        e, v = series(records, "epoch", "epoch", key)
        values += list(v)
        if len(e):
            ax.plot(e, v, style, ms=4, color=color, label=key.replace("_", " "))
            ax.annotate(
                f"{v[-1]:.2f}", (e[-1], v[-1]), xytext=(6, -3), textcoords="offset points", fontsize=7
            )
    ax.set(xlabel="epoch", title="per epoch")
    ax.set_ylabel(ylabel, fontsize=8)
    integer_ticks(ax)
    if not epochs:
        ax.text(0.5, 0.5, "no finished epoch yet", transform=ax.transAxes, ha="center", fontsize=8)
    elif len(epochs) == 1 and values:
        last = epochs[0]
        text = f"one epoch (step {last.get('step')}); the step curve is on the left"
        if last.get("test_recon") is not None and last.get("test_kl") is not None:
            text += f"\ntest recon {last['test_recon']:.2f}, test KL {last['test_kl']:.2f}"
        ax.text(0.5, 0.95, text, transform=ax.transAxes, ha="center", va="top", fontsize=7)
        lo, hi = min(values), max(values)
        span = max(hi - lo, 0.02 * abs(hi), 1e-3)
        ax.set_ylim(lo - 0.8 * span, hi + 1.8 * span)  # room for the text line above the points
        ax.set_xlim(0.5, 1.5)
        ax.set_xticks([last["epoch"]])


EPOCH_TEXT = ("train_loss", "test_loss", "test_recon", "test_kl")  # written out for a one-epoch run
