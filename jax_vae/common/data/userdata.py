"""The user's own images, `npz:PATH` (numpy arrays) and `folder:PATH` (grey PNG/JPEG), as float32 [N, D].

Numpy and Pillow only (no jax, no torch). Both kinds return what `data.load_dataset` returns plus the
images' (H, W) (`()` for flat [N, D] arrays), and every bad input is one `DataError` line naming the file.

- npz: `x_train` and optionally `x_test` (uint8 0-255, divided by 255 as torchvision's ToTensor, or
  float in [0, 1]; shape [N, H, W], [N, H, W, 1] or [N, D]), optionally `y_train` / `y_test` integer
  labels (default 0).
- folder: PNG/JPEG files of one size in mode L (8-bit grey) or 1 (bilevel), read in the order of their
  relative paths. Files directly in the folder get label 0; with one level of sub-folders (as
  torchvision's ImageFolder), each sub-folder is a class, labelled 0, 1, ... in sorted name order.
  Hidden names (starting with '.') are skipped.
- Without an `x_test` (always for a folder), the test split is a fixed subset: the first
  max(1, round(N * test_fraction)) indices of numpy's legacy RandomState(SPLIT_SEED).permutation(N)
  (a frozen stream), both splits kept in file order. It does not depend on the run seed, and a larger
  fraction's test set contains a smaller one's.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import TYPE_CHECKING

import numpy as np

from jax_vae.common.errors import DataError, one_line

if TYPE_CHECKING:
    import numpy.typing as npt

SPLIT_SEED = 0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("L", "1")  # Pillow modes read as 8-bit grey; "1" (bilevel) reads as 0 / 255
TO_GREY = (
    "convert them to grey first, e.g. Image.open(f).convert('L').save(f) with Pillow "
    "or `mogrify -colorspace Gray` with ImageMagick"
)
UserData = tuple[dict[str, np.ndarray], tuple[int, ...]]  # (load_dataset's dict, (H, W) or ())


def split_indices(n: int, test_fraction: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of N images, each sorted: the test split is the first
    max(1, round(N * f)) of RandomState(SPLIT_SEED).permutation(N), whatever the run seed."""
    n_test = max(1, round(n * test_fraction))
    if n_test >= n:
        raise DataError(
            f"{where}: a test split of {n_test} of its {n} images (test_fraction {test_fraction:g}) "
            "leaves none to train on; add images or lower --test-fraction"
        )
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)  # [N] the legacy stream is frozen
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _pack(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    test_fraction: float,
    where: str,
) -> dict[str, np.ndarray]:
    """The split dict of [N, D] float32 images and int64 labels; held out by split_indices without x_test."""
    if x_test is None or y_test is None:
        train, test = split_indices(len(x_train), test_fraction, where)
        x_train, x_test, y_train, y_test = x_train[train], x_train[test], y_train[train], y_train[test]

    def flat(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.reshape(len(x), -1))  # [N, D]

    return {"train": flat(x_train), "test": flat(x_test), "train_labels": y_train, "test_labels": y_test}


# ------------------------------------------------------------------------------------------ npz
def _pixels(x: np.ndarray, key: str, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """An image array as float32 [N, H, W] or [N, D] in [0, 1], and its (H, W) (or ()), validated."""
    if x.ndim == 4 and x.shape[-1] in (3, 4):
        raise DataError(
            f"{where}: {key} has shape {x.shape}, colour images ([N, H, W, {x.shape[-1]}]); "
            "convert them to grey first, e.g. x @ [0.299, 0.587, 0.114] for RGB"
        )
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]  # [N, H, W, 1] -> [N, H, W]
    if x.ndim not in (2, 3):
        raise DataError(f"{where}: {key} has shape {x.shape}; expected [N, H, W] or [N, D] images")
    if len(x) == 0 or x[0].size == 0:
        raise DataError(f"{where}: {key} has shape {x.shape}, no images")
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        np.divide(out, np.float32(255), out=out)  # as torchvision's ToTensor
    elif np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32)
        bad = ~np.isfinite(out)
        if bad.any():
            first = int(np.argmax(bad.reshape(len(out), -1).any(axis=1)))
            raise DataError(
                f"{where}: {key} holds {int(bad.sum())} non-finite values (NaN or inf), "
                f"the first in image {first}"
            )
        lo, hi = float(out.min()), float(out.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{where}: {key} values span [{lo:g}, {hi:g}]; float images must lie in [0, 1] "
                "(divide 0-255 values by 255, or store them as uint8)"
            )
    else:
        raise DataError(
            f"{where}: {key} has dtype {x.dtype}; expected uint8 (0-255) or float in [0, 1] "
            "(e.g. x.astype(np.uint8) for 0-255 integers)"
        )
    return out, tuple(int(d) for d in out.shape[1:]) if out.ndim == 3 else ()


def _labels(arrays: np.lib.npyio.NpzFile, key: str, n: int, where: str) -> npt.NDArray[np.int64]:
    """Integer labels [N] (>= 0) from the archive, or zeros when it has none."""
    if key not in arrays.files:
        return np.zeros(n, np.int64)
    y = arrays[key]
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{where}: {key} has shape {y.shape} and dtype {y.dtype}; expected {n} integer labels"
        )
    if n and int(y.min()) < 0:
        raise DataError(f"{where}: {key} holds a negative label {int(y.min())}; labels are 0, 1, ...")
    return np.asarray(y, np.int64)


def load_npz(path: pathlib.Path, test_fraction: float) -> UserData:
    """The splits of an .npz with x_train (and optionally x_test, y_train, y_test), validated."""
    where = str(path)
    if not path.is_file():
        raise DataError(f"{where}: {'is a folder (use folder:PATH)' if path.is_dir() else 'no such file'}")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{where}: not a readable .npz archive ({one_line(err, 200)})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(f"{where}: a single .npy array, not an .npz; save with np.savez(path, x_train=...)")
    with arrays:
        if "x_train" not in arrays.files:
            raise DataError(
                f"{where}: no array x_train (it holds: {', '.join(arrays.files) or 'nothing'}); "
                "save with np.savez(path, x_train=..., x_test=...)"
            )
        try:
            x_train, shape = _pixels(arrays["x_train"], "x_train", where)
            y_train = _labels(arrays, "y_train", len(x_train), where)
            x_test = y_test = None
            if "x_test" in arrays.files:
                x_test, test_shape = _pixels(arrays["x_test"], "x_test", where)
                if x_test.shape[1:] != x_train.shape[1:]:
                    raise DataError(
                        f"{where}: x_test images have shape {x_test.shape[1:]}, x_train images "
                        f"{x_train.shape[1:]}; both splits need one image size"
                    )
                y_test = _labels(arrays, "y_test", len(x_test), where)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"{where}: unreadable array ({one_line(err, 200)})") from None
    return _pack(x_train, y_train, x_test, y_test, test_fraction, where), shape


# --------------------------------------------------------------------------------------- folder
def _visible(folder: pathlib.Path) -> list[pathlib.Path]:
    """The folder's entries, hidden names ('.DS_Store', '.git') skipped, sorted by name."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as err:
        raise DataError(f"{folder}: cannot list the folder ({one_line(err)})") from None


def image_files(root: pathlib.Path) -> tuple[list[pathlib.Path], list[int], list[str]]:
    """(image files sorted by relative path, their labels, class names): flat -> label 0; one level
    of sub-folders -> one class per sub-folder, in sorted order."""
    if not root.is_dir():
        raise DataError(
            f"{root}: {'is a file (use npz:PATH for an .npz)' if root.exists() else 'no such folder'}"
        )
    entries = _visible(root)
    folders = [p for p in entries if p.is_dir()]
    if folders:
        loose = [p for p in entries if not p.is_dir()]
        if loose:
            raise DataError(
                f"{loose[0]}: a file beside the class sub-folders of {root}; move it into a class folder"
            )
        members = [(i, _visible(f)) for i, f in enumerate(folders)]
        for folder, (_, files) in zip(folders, members, strict=True):
            nested = [p for p in files if p.is_dir()]
            if nested:
                raise DataError(
                    f"{nested[0]}: a folder inside class folder {folder}; one level of classes only"
                )
            if not files:
                raise DataError(f"{folder}: class folder holds no images")
        pairs = [(p, i) for i, files in members for p in files]
        classes = [f.name for f in folders]
    else:
        pairs, classes = [(p, 0) for p in entries], []
    if not pairs:
        raise DataError(f"{root}: empty folder, no PNG or JPEG images")
    for p, _ in pairs:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(
                f"{p}: not a PNG or JPEG file; the folder may hold only {', '.join(IMAGE_SUFFIXES)} images"
            )
    return [p for p, _ in pairs], [label for _, label in pairs], classes


def _read_image(path: pathlib.Path) -> npt.NDArray[np.uint8]:
    """One grey image as uint8 [H, W] (Pillow; bilevel images read as 0 / 255)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode not in GREY_MODES:
                raise DataError(f"{path}: a colour or non-8-bit image (mode {img.mode}); {TO_GREY}")
            return np.asarray(img.convert("L"), np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read it as an image ({one_line(err, 200)})") from None


def load_folder(root: pathlib.Path, test_fraction: float) -> UserData:
    """The splits of a folder of one-size grey images (labels from class sub-folders), validated."""
    files, labels, _ = image_files(root)
    first = _read_image(files[0])  # [H, W]
    x = np.empty((len(files), *first.shape), np.uint8)  # [N, H, W]
    x[0] = first
    for i, path in enumerate(files[1:], start=1):
        img = _read_image(path)
        if img.shape != first.shape:
            (h, w), (h0, w0) = img.shape, first.shape
            raise DataError(
                f"{path} is {h}x{w} (height x width), {files[0]} is {h0}x{w0}; all images need one size"
            )
        x[i] = img
    pixels = x.reshape(len(x), -1).astype(np.float32)  # [N, H*W]
    np.divide(pixels, np.float32(255), out=pixels)
    data = _pack(pixels, np.asarray(labels, np.int64), None, None, test_fraction, str(root))
    return data, (int(first.shape[0]), int(first.shape[1]))


LOADERS = {"npz": load_npz, "folder": load_folder}


def load(kind: str, path: str | os.PathLike[str], test_fraction: float) -> UserData:
    """Dispatch on the dataset kind ("npz" or "folder")."""
    if not 0 < test_fraction < 1:  # also refuses nan
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    return LOADERS[kind](pathlib.Path(path), test_fraction)
