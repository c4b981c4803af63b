"""Datasets as numpy arrays: verified MNIST / Fashion-MNIST IDX files, generated `rectangles`, binarization.

Numpy only (no jax, no torch): `jax_vae` and `torch_reference` train on the same arrays.

Integrity. The IDX files (MNIST, Fashion-MNIST) are found, verified and downloaded by jax_vae.common.data.idx
(its docstring: the checks, the digests and their provenance, atomic downloads).

User data. `npz:PATH` and `folder:PATH` are read by jax_vae.common.data.userdata (its docstring: formats,
labels, the fixed test split); their input size comes from the files. `celeba:PATH` is CelebA as
AntixK/PyTorch-VAE transforms it (jax_vae.common.data.celeba), RGB.

Resize. `resize = N > 0` resizes every image of every dataset to N x N (jax_vae.common.data.resize: Pillow's
BILINEAR on float images; CelebA: Pillow on its 8-bit crops, as torchvision), before any binarization.

Rectangles. David Stutz's Lua-torch VAE (vae-articles/vae.lua) draws, per image, with torch.manualSeed(1):
h = random(8, 8), w = random(8, 8), aH = random(1, 24 - h), aW = random(1, 24 - w) and fills rows aH..aH+8,
columns aW..aW+8 (inclusive, 1-based), i.e. a 9x9 square whose 0-based top-left corner is uniform over
0..size-square (16 x 16 positions). Lua torch's random(a, b) is `genrand_int32() % (b + 1 - a) + a` on the
reference MT19937 seeded by init_genrand(seed), which is exactly numpy's legacy RandomState(seed) stream, so
`make_rectangles(seed=s)` replays the source's loop draw for draw (4 draws per image; the two size draws are
consumed and ignored). The train split uses the source's seed 1, so it reproduces the source's 50,000 images;
the test split (10,000) uses seed 2.
"""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING

import numpy as np

from jax_vae.common.data import celeba, userdata
from jax_vae.common.data.catalog import (
    BINARIZATIONS,
    DEFAULT_TEST_FRACTION,
    EVAL_BINARIZATION_SEED,
    IMAGE_SHAPES,
    KNOWN,
    NUM_CLASSES,
    RECTANGLES_SPLITS,
    SPLITS,
    parse_dataset,
)
from jax_vae.common.data.idx import FILES, locate, read_idx
from jax_vae.common.data.resize import resize_flat
from jax_vae.common.errors import DataError

if TYPE_CHECKING:
    import numpy.typing as npt


def default_data_dir() -> pathlib.Path:
    """$JAX_VAE_DATA_DIR if set, else $XDG_CACHE_HOME (default ~/.cache)/jax_vae/datasets."""
    if os.environ.get("JAX_VAE_DATA_DIR"):
        return pathlib.Path(os.environ["JAX_VAE_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache) / "jax_vae" / "datasets"


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    resize: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, D] in [0, 1], labels int64 [N]) of one split of a dataset (the user's own
    data without a test split: the held-out `test_fraction`, see userdata), resized to resize x resize
    when resize > 0."""
    dataset = parse_dataset(name)
    name = dataset.name
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of {name}; valid splits: {', '.join(SPLITS)}")
    if dataset.kind == "celeba":
        assert dataset.path is not None
        return celeba.load_split(dataset.path, split, resize)
    if dataset.path is not None:
        arrays, shape = userdata.load(dataset.kind, dataset.path, test_fraction)
        return _resized(arrays[split], shape, resize, name), arrays[f"{split}_labels"]
    x, labels = _load_known(name, split, data_dir, download)
    return _resized(x, IMAGE_SHAPES[name], resize, name), labels


def _resized(x: np.ndarray, shape: tuple[int, ...], resize: int, where: str) -> np.ndarray:
    """Grey images [N, H * W] as they are (resize = 0) or resized to [N, resize * resize]."""
    return resize_flat(x, shape, 1, resize, where) if resize else x


def _load_known(
    name: str, split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """(images float32 [N, D] in [0, 1], labels int64 [N]) of a known dataset's split."""
    if KNOWN[name] == "generated":
        n, seed = RECTANGLES_SPLITS[split]
        return make_rectangles(n, seed)
    data_dir = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} is a file, not a folder (pass --data-dir FOLDER)")
    image_spec, label_spec = FILES[name][split]
    image_path = locate(name, image_spec, data_dir, download)
    images = read_idx(image_path, image_spec.shape, image_spec.sha256)  # [N, 28, 28] uint8
    label_path = locate(name, label_spec, data_dir, download)
    labels = read_idx(label_path, label_spec.shape, label_spec.sha256)  # [N] uint8
    if len(labels) != len(images):
        raise DataError(f"{label_path}: {len(labels)} labels for the {len(images)} images of {image_path}")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{label_path}: label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}")
    x = images.reshape(len(images), -1).astype(np.float32)  # [N, 784]
    np.divide(x, np.float32(255), out=x)  # as torchvision's ToTensor: float32 division by 255
    return x, labels.astype(np.int64)


def make_rectangles(
    n: int = 50_000, seed: int = 0, size: int = 24, square: int = 9
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Stutz's rectangles: float32 [n, size*size] in {0, 1}, one filled square each; labels: the
    top-left corner's flat index."""
    if n < 0 or not 1 <= square <= size or not 0 <= seed < 2**32:
        raise ValueError(
            f"make_rectangles: need n >= 0, 1 <= square <= size, 0 <= seed < 2**32; "
            f"got n={n}, size={size}, square={square}, seed={seed}"
        )
    positions = size - square + 1
    # Lua: h, w, aH, aW = random(8,8), random(8,8), random(1, H-h), random(1, W-w),
    # each genrand_int32 % range.
    draws = np.random.RandomState(seed).randint(0, 2**32, size=(n, 4), dtype=np.uint32)  # [n, 4]
    top = (draws[:, 2] % positions).astype(np.int64)  # [n] 0-based first filled row
    left = (draws[:, 3] % positions).astype(np.int64)  # [n] 0-based first filled column
    idx = np.arange(size)
    rows = (idx >= top[:, None]) & (idx < top[:, None] + square)  # [n, size]
    cols = (idx >= left[:, None]) & (idx < left[:, None] + square)  # [n, size]
    images = (rows[:, :, None] & cols[:, None, :]).reshape(n, size * size).astype(np.float32)
    return images, top * size + left


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from (seed, *keys) by numpy's SeedSequence; stable across numpy versions."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def binarize(x: np.ndarray, seed: int) -> npt.NDArray[np.float32]:
    """Bernoulli(x) draw as float32 {0, 1}, deterministic in `seed` (static binarization; one draw per
    epoch = dynamic)."""
    x = np.asarray(x)
    if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataError(f"binarize: values must lie in [0, 1], got [{float(x.min())}, {float(x.max())}]")
    u = np.random.default_rng(seed).random(x.shape, dtype=np.float32)
    return (u < x).astype(np.float32)


def threshold(x: np.ndarray) -> npt.NDArray[np.float32]:
    """x > 0.5 as float32 {0, 1}: the TF CVAE tutorial's np.where(x > .5, 1.0, 0.0) (fixed, no draw;
    on 8-bit images / 255 the same as its float64 test, as no v / 255 lies within float32 rounding of 0.5)."""
    return np.where(np.asarray(x) > 0.5, np.float32(1), np.float32(0))


def binarize_for_evaluation(x: np.ndarray, seed: int = EVAL_BINARIZATION_SEED) -> npt.NDArray[np.float32]:
    """A dynamic preset's test split binarized ONCE, with derive_seed(seed, 1): every run (and the
    trainer's per-epoch test loss) is scored on the same binary images."""
    return binarize(x, derive_seed(seed, 1))


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    binarization: str = "none",
    seed: int = 0,
    download: bool = True,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    resize: int = 0,
) -> dict[str, np.ndarray]:
    """{"train", "test": float32 [N, D], "train_labels", "test_labels": int64 [N]}, resized (resize > 0)
    and binarized if asked; the user's own data and CelebA also have "image_shape": int64 [2] (H, W) for
    [N, H, W] images, [0] for [N, D], and "image_channels": int64 [] (C: 1 grey, 3 CelebA's RGB)."""
    dataset = parse_dataset(name)
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}; valid: {', '.join(BINARIZATIONS)}")
    extra: dict[str, np.ndarray] = {}
    if dataset.kind == "celeba":
        x_train, y_train = load_split(dataset.name, "train", resize=resize)
        x_test, y_test = load_split(dataset.name, "test", resize=resize)
        size = resize or celeba.CROP
        extra = {"image_shape": np.array((size, size), np.int64), "image_channels": np.array(celeba.CHANNELS)}
    elif dataset.path is not None:
        arrays, shape = userdata.load(dataset.kind, dataset.path, test_fraction)
        x_train, y_train, x_test, y_test = (
            arrays[k] for k in ("train", "train_labels", "test", "test_labels")
        )
        x_train, x_test = (_resized(x, shape, resize, dataset.name) for x in (x_train, x_test))
        shape = (resize, resize) if resize else shape
        extra = {"image_shape": np.array(shape, np.int64), "image_channels": np.array(1)}  # [2] or [0]
    else:
        x_train, y_train = load_split(dataset.name, "train", data_dir, download, resize=resize)
        x_test, y_test = load_split(dataset.name, "test", data_dir, download, resize=resize)
    if binarization == "static":  # one fixed draw; "dynamic" leaves grey values for per-epoch draws
        x_train = binarize(x_train, derive_seed(seed, 0))
        x_test = binarize(x_test, derive_seed(seed, 1))
    elif binarization == "threshold":  # fixed, as static, but a threshold instead of a draw
        x_train, x_test = threshold(x_train), threshold(x_test)
    return {"train": x_train, "test": x_test, "train_labels": y_train, "test_labels": y_test, **extra}
