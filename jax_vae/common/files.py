"""The one atomic write: a temp file beside the target, fsync of the file, rename, fsync of the folder.

Readers see the old file or the new one, never a torn one, and a crash after return keeps the new one.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def with_path(err: OSError, path: Path, always: bool = False) -> OSError:
    """`err` naming `path` when it names no file (a write on an open file: ENOSPC, EIO, ...) or,
    with `always`, in place of the file it names (a temp file the user never asked for)."""
    if err.filename is not None and not always:
        return err
    named = OSError(err.errno, err.strerror or str(err), str(path))
    named.__cause__ = err
    return named


def check_writable(path: Path, what: str = "output") -> None:
    """Fail fast, before expensive work, when `path` (a file to write) cannot be created: an existing
    non-file, a parent that is a file, or a folder that refuses new files (read-only, no permission).
    Probes with a temp file in the nearest existing folder, which it removes; creates nothing else."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"the {what} path is a folder", str(path))
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{parent} is a file, not a folder", str(path))
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise OSError(err.errno, f"cannot write there ({err.strerror})", str(path)) from err


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], mode: int = 0o644) -> None:
    """Call `write(f)` on a temp file beside `path`, fsync it, rename it to `path`, fsync the folder.
    An OSError names `path` (or the temp file's folder) and leaves no temp file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise with_path(err, path, always=True) from None
    try:
        os.fchmod(fd, mode)  # mkstemp's 0600 would make run files private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        os_error = next((e for e in _chain(err) if isinstance(e, OSError)), None)
        if os_error is not None:  # also behind a library's own error (torch.save: RuntimeError)
            raise with_path(os_error, path, always=True) from None
        raise
    fsync_dir(path.parent)


def _chain(err: BaseException) -> list[BaseException]:
    """err and the exceptions it was raised from or during (__cause__ / __context__), in order."""
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """atomic_write of a bytes payload."""

    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_write of UTF-8 text."""
    atomic_write_bytes(path, text.encode())
