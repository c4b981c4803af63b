"""Reading, verifying and downloading the IDX files of the dataset table (MNIST, Fashion-MNIST).

Numpy only (no jax, no torch); jax_vae.common.data.datasets loads the splits through `FILES` and `locate`.

Integrity. Every IDX file is checked for its magic number (0x0801 labels, 0x0803 images), its dimensions,
its exact byte size (header + payload, no more, no less) and the SHA-256 of its *decompressed* bytes.
The decompressed digest is the portable check: gzip wrappers differ between mirrors and re-packagers
(the Debian Fashion-MNIST files are re-compressed), so a `.gz` MD5 would reject good copies.
- Fashion-MNIST (all 4 files) and MNIST test (2 files): digests recomputed here on the offline copies,
  equal to the table in ../shared/datasets/README.md (whose MNIST `.gz` files carry torchvision's MD5s).
- MNIST train (2 files, not available offline): ba891046... / 65a50cbb..., the digests of the decompressed
  upstream files pinned independently by many public projects; the same lists carry the two MNIST test
  digests, which match the ones measured here, so the pair is trusted but could not be recomputed offline.
Downloads pass the same check in memory before they are written (temp file + os.replace), so a bad or
partial download never becomes visible; existing files are only read, never overwritten.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import os
import pathlib
import sys
import urllib.request
import zlib
from typing import TYPE_CHECKING

import numpy as np

from jax_vae.common.errors import DataError, one_line
from jax_vae.common.files import atomic_write_bytes

if TYPE_CHECKING:
    import numpy.typing as npt

MAX_DOWNLOAD_BYTES = 64 * 2**20
_IDX_MAGIC = {1: 0x0801, 3: 0x0803}  # ndim -> magic (unsigned byte data)


@dataclasses.dataclass(frozen=True)
class IDXFile:
    """One decompressed IDX file: its name, array shape and SHA-256 of its bytes."""

    name: str
    shape: tuple[int, ...]
    sha256: str


def _pair(prefix: str, n: int, images_sha: str, labels_sha: str) -> tuple[IDXFile, IDXFile]:
    return (
        IDXFile(f"{prefix}-images-idx3-ubyte", (n, 28, 28), images_sha),
        IDXFile(f"{prefix}-labels-idx1-ubyte", (n,), labels_sha),
    )


# dataset -> split -> (images, labels)
FILES: dict[str, dict[str, tuple[IDXFile, IDXFile]]] = {
    "mnist": {
        "train": _pair(
            "train",
            60_000,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        "test": _pair(
            "t10k",
            10_000,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    },
    "fashion_mnist": {
        "train": _pair(
            "train",
            60_000,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "test": _pair(
            "t10k",
            10_000,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
}
# torchvision's mirror lists; each serves <file name>.gz.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
# Sub-folders of the data dir searched before the data dir itself; the first is where downloads go.
# The second is torchvision's layout, so an existing torchvision cache can be reused.
FOLDERS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion_mnist": ("fashion-mnist", "FashionMNIST/raw"),
}


def _identify(digest: str) -> str:
    """' (it is <dataset> <file>)' when a digest belongs to another known file, else ''."""
    for dataset, splits in FILES.items():
        for spec in (s for pair in splits.values() for s in pair):
            if spec.sha256 == digest:
                return f" (it is the {dataset} file {spec.name})"
    return ""


def _decode_idx(
    raw: bytes, where: str, expected_shape: tuple[int, ...] | None, sha256: str | None
) -> npt.NDArray[np.uint8]:
    """Validate decompressed IDX bytes and view them as a uint8 array of their declared dims."""
    if len(raw) < 4:
        raise DataError(
            f"{where}: truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number"
        )
    magic = int.from_bytes(raw[:4], "big")
    ndim = raw[3]
    if _IDX_MAGIC.get(ndim) != magic:
        raise DataError(
            f"{where}: bad magic number 0x{magic:08x}, expected 0x00000801 (labels) "
            "or 0x00000803 (images) of an unsigned-byte IDX file"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{where}: truncated IDX file: {len(raw)} bytes, shorter than its {header}-byte header"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if expected_shape is not None and dims != tuple(expected_shape):
        raise DataError(f"{where}: dimensions {dims}, expected {tuple(expected_shape)}")
    size = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) < size:
        raise DataError(f"{where}: truncated IDX file: {len(raw)} bytes, dimensions {dims} need {size}")
    if len(raw) > size:
        raise DataError(
            f"{where}: {len(raw) - size} trailing bytes after the {size} bytes that dimensions {dims} need"
        )
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256.lower():
            raise DataError(
                f"{where}: SHA-256 of the decompressed bytes is {digest}, "
                f"expected {sha256.lower()}{_identify(digest)}"
            )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _decompress(raw: bytes, where: str) -> bytes:
    """Gunzip when the bytes start with the gzip magic, else return them unchanged."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{where}: corrupt or truncated gzip data ({one_line(err)})") from None


def read_idx(
    path: str | os.PathLike[str], expected_shape: tuple[int, ...] | None = None, sha256: str | None = None
) -> npt.NDArray[np.uint8]:
    """Read a raw or gzipped IDX file (sniffed by content) into a read-only uint8 array, fully validated."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or one_line(err)})") from None
    return _decode_idx(_decompress(raw, str(path)), str(path), expected_shape, sha256)


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    """GET `url` (http, https or file) into memory, refusing bodies over MAX_DOWNLOAD_BYTES."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed mirror list
        body: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(body) > MAX_DOWNLOAD_BYTES:
        raise DataError(f"{url}: response larger than {MAX_DOWNLOAD_BYTES} bytes")
    return body


def _download(name: str, spec: IDXFile, folder: pathlib.Path) -> pathlib.Path:
    """Fetch spec.name(.gz) from the mirrors, verify it, then atomically place it in `folder`."""
    errors = []
    for mirror in MIRRORS[name]:
        url = f"{mirror}{spec.name}.gz"
        try:
            print(f"jax_vae: downloading {url}", file=sys.stderr)
            body = _fetch(url)
            _decode_idx(_decompress(body, url), url, spec.shape, spec.sha256)
        except (
            OSError,
            ValueError,
            http.client.HTTPException,
        ) as err:  # URLError: OSError; DataError: ValueError
            errors.append(f"{url}: {one_line(err)}")
            continue
        dest = folder / (spec.name + (".gz" if body[:2] == b"\x1f\x8b" else ""))
        _place(dest, body)
        return dest
    raise DataError(
        f"{name}: could not download {spec.name}.gz into {folder} ({'; '.join(errors)}); "
        f"when offline, copy the file there or pass --data-dir (or JAX_VAE_DATA_DIR) "
        f"pointing at a folder that holds it"
    )


def _place(dest: pathlib.Path, body: bytes) -> None:
    """Write a verified download into place atomically (one line on an OS error)."""
    try:
        atomic_write_bytes(dest, body)
    except OSError as err:
        raise DataError(f"{dest}: cannot write the downloaded file ({one_line(err)})") from None


def locate(name: str, spec: IDXFile, data_dir: pathlib.Path, download: bool) -> pathlib.Path:
    """First existing raw or .gz copy of `spec` under data_dir/<folder>/ or data_dir/; else download."""
    folders = [data_dir / f for f in FOLDERS[name]] + [data_dir]
    for folder in folders:
        for candidate in (folder / spec.name, folder / f"{spec.name}.gz"):
            if candidate.is_file():
                return candidate
    if download:
        return _download(name, spec, folders[0])
    looked = ", ".join(str(f) for f in folders)
    raise DataError(
        f"{name}: {spec.name}[.gz] not found (looked in {looked}) and downloading is off; "
        f"pass --data-dir (or set JAX_VAE_DATA_DIR) to a folder that holds it, or allow downloading"
    )
