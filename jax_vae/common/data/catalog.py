"""The one table of datasets, without I/O: names, kinds, image sizes, splits and binarizations.

The config layer validates dataset names through it; jax_vae.common.data.datasets loads them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import typing
from typing import Literal

from jax_vae.common.errors import DataError

DatasetName = Literal["mnist", "fashion_mnist", "rectangles"]  # the known names; also npz:PATH, folder:PATH
DatasetKind = Literal["idx", "generated", "npz", "folder", "celeba"]
Binarization = Literal["none", "static", "dynamic", "threshold"]
# The one table of datasets: name -> kind, and pixels per image (train/test sizes are in idx.FILES and
# RECTANGLES_SPLITS); the user's own data (jax_vae.common.data.userdata) is "npz:PATH" or "folder:PATH".
KNOWN: dict[str, DatasetKind] = {"mnist": "idx", "fashion_mnist": "idx", "rectangles": "generated"}
INPUT_DIMS: dict[str, int] = {"mnist": 784, "fashion_mnist": 784, "rectangles": 576}
USER_KINDS: tuple[DatasetKind, ...] = ("npz", "folder")
PATH_KINDS: tuple[DatasetKind, ...] = (*USER_KINDS, "celeba")  # KIND:PATH names; input size from the files
IMAGE_SHAPES: dict[str, tuple[int, int]] = {
    "mnist": (28, 28),
    "fashion_mnist": (28, 28),
    "rectangles": (24, 24),
}
DATASETS: tuple[str, ...] = typing.get_args(DatasetName)
VALID_DATASETS = ", ".join((*DATASETS, *(f"{k}:PATH" for k in PATH_KINDS)))
DEFAULT_TEST_FRACTION = 0.1  # the user's data without a test split: the held-out fraction
SPLITS: tuple[str, ...] = ("train", "test")
BINARIZATIONS: tuple[str, ...] = typing.get_args(Binarization)
EVAL_BINARIZATION_SEED = 0  # dynamic presets: the test split is binarized once, with this seed
NUM_CLASSES = 10
RECTANGLES_SPLITS: dict[str, tuple[int, int]] = {"train": (50_000, 1), "test": (10_000, 2)}  # (n, seed)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A parsed dataset name: its kind, and for the user's own data ("npz:PATH", "folder:PATH") the path.
    IDX datasets read --data-dir; the user's data sets input_dim and the image shape from its files."""

    name: str  # canonical: "fashion_mnist", "npz:/abs/x.npz" (as given until absolute())
    kind: DatasetKind
    path: pathlib.Path | None = None

    @property
    def reads_data_dir(self) -> bool:
        return self.kind == "idx"

    @property
    def sized_by_data(self) -> bool:
        return self.kind in PATH_KINDS

    def absolute(self) -> Dataset:
        """The same dataset with its path made absolute (~ expanded): the form config.json records."""
        if self.path is None:
            return self
        path = self.path.expanduser().absolute()
        return Dataset(f"{self.kind}:{path}", self.kind, path)


def canonical_name(name: str) -> str:
    """'fashion-mnist' -> 'fashion_mnist'; a user dataset's path is kept as written."""
    prefix, sep, _ = name.partition(":")
    return name if sep and prefix in PATH_KINDS else name.replace("-", "_")


def parse_dataset(name: str) -> Dataset:
    """The Dataset a name means: a known name, or npz:PATH / folder:PATH (DataError otherwise)."""
    prefix, sep, path = name.partition(":")
    if sep and prefix in PATH_KINDS:
        if not path.strip():
            raise DataError(f"dataset {name!r} names no path; pass {prefix}:PATH")
        return Dataset(name, prefix, pathlib.Path(path))
    canonical = canonical_name(name)
    if canonical not in KNOWN:
        raise DataError(f"unknown dataset {name!r}; valid datasets: {VALID_DATASETS}")
    return Dataset(canonical, KNOWN[canonical])
