"""Tests for jax_vae.common.data.datasets and .idx: IDX validation, real data, rectangles, binarization,
downloads."""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import sys

import numpy as np
import pytest

from jax_vae.common.data import catalog, idx
from jax_vae.common.data import datasets as data
from jax_vae.common.errors import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    """A valid unsigned-byte IDX file holding `arr`."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write(path: pathlib.Path, body: bytes, gz: bool = False) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


IMAGES = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)  # [5, 28, 28]
LABELS = np.array([0, 9, 3, 3, 7], np.uint8)


def assert_one_line(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg


# --- IDX round trip and bad files ---------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    for arr, name in ((IMAGES, "img"), (LABELS, "lab")):
        body = idx_bytes(arr)
        path = write(tmp_path / (name + (".gz" if gz else "")), body, gz)
        out = idx.read_idx(path, expected_shape=arr.shape, sha256=sha(body))
        assert out.dtype == np.uint8 and out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)


def _bad_files():
    good = idx_bytes(IMAGES)
    return {
        "bad_magic": (b"\x00\x00\x08\x02" + good[4:], None, "bad magic number 0x00000802"),
        "float_magic": (b"\x00\x00\x0d\x03" + good[4:], None, "bad magic number 0x00000d03"),
        "wrong_dims": (good, (5, 28, 27), "dimensions (5, 28, 28), expected (5, 28, 27)"),
        "truncated": (good[:-10], None, f"{len(good) - 10} bytes, dimensions (5, 28, 28) need {len(good)}"),
        "truncated_header": (good[:9], None, "shorter than its 16-byte header"),
        "empty": (b"", None, "shorter than the 4-byte magic"),
        "trailing": (good + b"\x00\x01", None, "2 trailing bytes"),
        "checksum": (good, "0" * 64, f"SHA-256 of the decompressed bytes is {sha(good)}"),
    }


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", list(_bad_files()))
def test_bad_idx_raises_one_line_and_leaves_file(tmp_path, case, gz):
    body, arg, expected = _bad_files()[case]
    path = write(tmp_path / "x-idx3-ubyte", body, gz)
    before = path.read_bytes()
    kwargs = {"sha256": arg} if case == "checksum" else {"expected_shape": arg}
    with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
        idx.read_idx(path, **kwargs)
    assert_one_line(err, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("body", [gzip.compress(idx_bytes(IMAGES))[:-20], b"\x1f\x8b" + b"garbage" * 10])
def test_corrupt_gzip(tmp_path, body):
    path = write(tmp_path / "x.gz", body)
    with pytest.raises(DataError, match="corrupt or truncated gzip") as err:
        idx.read_idx(path)
    assert_one_line(err, path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read") as err:
        idx.read_idx(tmp_path / "nope")
    assert_one_line(err, tmp_path / "nope")


# --- load_split on generated IDX folders --------------------------------------------------------


@pytest.fixture
def tiny_mnist(monkeypatch):
    """Point the mnist file table at 5-example files; returns {file name: decompressed bytes}."""
    bodies = {}

    def spec(prefix, images, labels):
        pair = []
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            bodies[name] = idx_bytes(arr)
            pair.append(idx.IDXFile(name, arr.shape, sha(bodies[name])))
        return tuple(pair)

    table = {"train": spec("train", IMAGES, LABELS), "test": spec("t10k", IMAGES[:3], LABELS[:3])}
    monkeypatch.setitem(idx.FILES, "mnist", table)
    return bodies


@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", "."])
@pytest.mark.parametrize("gz", [False, True])
def test_load_split_generated(tmp_path, tiny_mnist, layout, gz):
    for name, body in tiny_mnist.items():
        write(tmp_path / layout / (name + (".gz" if gz else "")), body, gz)
    x, y = data.load_split("mnist", "train", tmp_path, download=False)
    assert x.dtype == np.float32 and x.shape == (5, 784) and y.dtype == np.int64
    np.testing.assert_array_equal(x, IMAGES.reshape(5, 784).astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, LABELS)
    assert data.load_split("mnist", "test", tmp_path, download=False)[0].shape == (3, 784)


def test_label_out_of_range(tmp_path, tiny_mnist, monkeypatch):
    bad = idx_bytes(np.array([0, 9, 10, 3, 7], np.uint8))
    images, labels = idx.FILES["mnist"]["train"]
    monkeypatch.setitem(idx.FILES["mnist"], "train", (images, idx.IDXFile(labels.name, (5,), sha(bad))))
    write(tmp_path / images.name, tiny_mnist[images.name])
    path = write(tmp_path / labels.name, bad)
    with pytest.raises(DataError, match="label 10 out of range 0..9") as err:
        data.load_split("mnist", "train", tmp_path, download=False)
    assert_one_line(err, path)


def test_missing_offline_says_where_and_how(tmp_path, tiny_mnist):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*not found.*--data-dir") as err:
        data.load_split("mnist", "train", tmp_path, download=False)
    assert_one_line(err, tmp_path / "mnist")
    assert not any(tmp_path.iterdir())


def test_unknown_names():
    with pytest.raises(
        DataError, match="unknown dataset 'cifar'; valid datasets: mnist, fashion_mnist, rectangles"
    ):
        data.load_dataset("cifar")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        data.load_split("rectangles", "valid")
    with pytest.raises(DataError, match="unknown binarization 'half'"):
        data.load_dataset("rectangles", binarization="half")


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_VAE_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    monkeypatch.delenv("JAX_VAE_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_data_dir() == tmp_path / "jax_vae" / "datasets"


# --- downloads (file:// mirrors, no network) -----------------------------------------------------


@pytest.fixture
def mirror(tmp_path, tiny_mnist, monkeypatch):
    """A file:// mirror serving the tiny mnist files as .gz; returns its folder."""
    served = tmp_path / "served"
    for name, body in tiny_mnist.items():
        write(served / f"{name}.gz", body, gz=True)
    monkeypatch.setitem(idx.MIRRORS, "mnist", (served.as_uri() + "/",))
    return served


def test_download_atomic_and_verified(tmp_path, mirror):
    cache = tmp_path / "cache"
    x, y = data.load_split("mnist", "train", cache, download=True)
    np.testing.assert_array_equal(y, LABELS)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    assert (cache / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes() == (
        mirror / "train-labels-idx1-ubyte.gz"
    ).read_bytes()


def test_download_wrong_checksum_leaves_nothing(tmp_path, mirror):
    write(mirror / "train-images-idx3-ubyte.gz", idx_bytes(255 - IMAGES), gz=True)  # valid IDX, wrong bytes
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="could not download train-images-idx3-ubyte.gz.*SHA-256") as err:
        data.load_split("mnist", "train", cache, download=True)
    assert "\n" not in str(err.value)
    assert not (cache / "mnist").exists() or not any((cache / "mnist").iterdir())


def test_download_falls_back_to_next_mirror(tmp_path, mirror, monkeypatch):
    monkeypatch.setitem(idx.MIRRORS, "mnist", ((tmp_path / "gone").as_uri() + "/", mirror.as_uri() + "/"))
    x, _ = data.load_split("mnist", "test", tmp_path / "cache", download=True)
    assert x.shape == (3, 784)


def test_download_offline_message(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setitem(idx.MIRRORS, "mnist", ((tmp_path / "gone").as_uri() + "/",))
    with pytest.raises(DataError, match=r"could not download .*offline.*--data-dir") as err:
        data.load_split("mnist", "train", tmp_path / "cache", download=True)
    assert "\n" not in str(err.value)


def test_existing_corrupt_file_is_not_replaced(tmp_path, mirror):
    path = write(tmp_path / "mnist" / "train-images-idx3-ubyte", idx_bytes(IMAGES)[:-1])
    with pytest.raises(DataError, match="truncated") as err:
        data.load_split("mnist", "train", tmp_path, download=True)
    assert_one_line(err, path)
    assert path.read_bytes() == idx_bytes(IMAGES)[:-1]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# --- real data (offline copies; skipped when absent) ---------------------------------------------

REAL_DIR = pathlib.Path(os.environ.get("JAX_VAE_DATA_DIR", "/nonexistent"))


def real(name: str, split: str):
    images, labels = idx.FILES[name][split]
    folder = REAL_DIR / idx.FOLDERS[name][0]
    if not all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in (images.name, labels.name)):
        pytest.skip(f"{name} {split} not under $JAX_VAE_DATA_DIR={REAL_DIR}")
    return data.load_split(name, split, REAL_DIR, download=False)


@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_real_fashion_mnist(split, n):
    x, y = real("fashion_mnist", split)
    assert x.shape == (n, 784) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [n // 10] * 10)  # balanced classes
    assert abs(float(x.mean()) - 0.286) < 0.002


def test_real_mnist_test_and_offline_train():
    x, y = real("mnist", "test")
    assert x.shape == (10_000, 784) and 0.0 <= x.min() and x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    if any((REAL_DIR / "mnist").glob("train-images-idx3-ubyte*")):
        pytest.skip("MNIST train present")
    with pytest.raises(DataError, match="mnist: train-images-idx3-ubyte.*not found.*--data-dir"):
        data.load_split("mnist", "train", REAL_DIR, download=False)


def test_real_file_of_other_dataset_is_named(tmp_path):
    src = REAL_DIR / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    if not src.is_file():
        pytest.skip("Fashion-MNIST not under $JAX_VAE_DATA_DIR")
    spec = idx.FILES["mnist"]["test"][1]
    with pytest.raises(DataError, match="it is the fashion_mnist file t10k-labels-idx1-ubyte") as err:
        idx.read_idx(src, spec.shape, spec.sha256)
    assert_one_line(err, src)


# --- load_dataset ---------------------------------------------------------------------------------


def test_load_dataset_binarization(tmp_path, tiny_mnist, monkeypatch):
    for name, body in tiny_mnist.items():
        write(tmp_path / name, body)
    grey = data.load_dataset("mnist", tmp_path, binarization="dynamic", download=False)
    static = data.load_dataset("mnist", tmp_path, binarization="static", seed=5, download=False)
    assert set(grey) == {"train", "test", "train_labels", "test_labels"}
    assert len(np.unique(grey["train"])) > 2 and set(np.unique(static["train"])) == {0.0, 1.0}
    np.testing.assert_array_equal(static["train"], data.binarize(grey["train"], data.derive_seed(5, 0)))
    np.testing.assert_array_equal(static["test"], data.binarize(grey["test"], data.derive_seed(5, 1)))
    np.testing.assert_array_equal(static["train_labels"], LABELS)
    assert data.derive_seed(5, 0) != data.derive_seed(5, 1) != data.derive_seed(6, 1)
    monkeypatch.setitem(catalog.RECTANGLES_SPLITS, "train", (300, 1))
    monkeypatch.setitem(catalog.RECTANGLES_SPLITS, "test", (500, 2))
    rect = data.load_dataset("rectangles", binarization="static")
    np.testing.assert_array_equal(rect["test"], data.make_rectangles(500, 2)[0])  # already binary


def test_no_framework_import():
    import subprocess

    code = "import sys, jax_vae.common.data.datasets; print('jax' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
