"""The run-folder lock: one writer per run folder, whichever framework it is.

`<run>/run.lock` holds {"host", "pid", "framework", "started"} and an exclusive `flock` for as long as
the writing process lives. The kernel drops the flock when the holder dies (SIGKILL included), so a
lock file whose flock is free is stale: the next trainer takes it over with a one-line note. A live
holder, or a holder on this host whose PID is still running (file systems without flock), makes the
second trainer stop with one line before it writes anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from jax_vae.common.errors import RunError

LOCK_FILE = "run.lock"


def _alive(pid: int) -> bool:
    """Whether a process with this PID runs on this host (EPERM: it runs under another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
        return record if isinstance(record, dict) else {}
    except ValueError:
        return {}


def _describe(holder: dict[str, Any]) -> str:
    return (
        f"{holder.get('framework', '?')} process {holder.get('pid', '?')} on {holder.get('host', '?')} "
        f"(since {holder.get('started', '?')})"
    )


class RunLock:
    """`with RunLock(run_dir, framework, note):` holds run_dir/run.lock; creates run_dir if needed and,
    when the block fails, removes what it created (the lock file, and the folder if it made it and
    it is empty)."""

    def __init__(self, run_dir: Path, framework: str, note: Callable[[str], None] | None = None) -> None:
        self.run_dir, self.framework, self.note = Path(run_dir), framework, note
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._made_dir = False

    def acquire(self) -> None:
        """Take the lock or raise RunError naming its holder; a stale lock is taken over with a note."""
        self._made_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = self._flock()
        holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        pid = holder.get("pid")
        if holder.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid():
            if _alive(pid):  # flock not honoured here (e.g. some network file systems)
                os.close(fd)
                raise RunError(
                    f"{self.run_dir} is in use by {_describe(holder)}; wait for it to finish or "
                    f"choose another --out (if that process is not a trainer, delete {self.path})"
                )
        if holder and self.note is not None:
            self.note(f"note: taking over the stale lock of {_describe(holder)} in {self.path}: it is gone")
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "framework": self.framework,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _flock(self) -> int:
        """An fd of run.lock holding its flock; retried when the file was replaced meanwhile."""
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = _holder(self.path.read_text())
                raise RunError(
                    f"{self.run_dir} is in use by {_describe(holder)}; wait for it to finish or "
                    "choose another --out"
                ) from None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder released (unlinked) it between our open and flock: retry
        raise RunError(f"could not lock {self.path}: it keeps being replaced")

    def release(self, failed: bool = False) -> None:
        """Delete the lock file and drop the flock (in that order, so no one sees a free stale file)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        if failed and self._made_dir:
            try:
                self.run_dir.rmdir()  # only when empty: nothing else was written
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release(failed=kind is not None)
