"""Every OS error is one line naming the path and the cause, exit 2, nothing half-written.

Faults are injected for real where the machine allows it (a tiny or read-only tmpfs, root only), and
otherwise by a patched write that raises ENOSPC / EROFS; writes through the one atomic write go to
/dev/full, which fails every write with ENOSPC as a full disk does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jax_vae.common.runs import folder as runs
from tests.helpers import (
    FRAMEWORKS,
    TINY,
    assert_last_line_error,
    assert_one_line_error,
    run_main,
    tree_snapshot,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FULL = "No space left on device"


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "16k", read_only: bool = False) -> Iterator[bool]:
    """Mount a tmpfs of `size` at `path` for the block; yields False where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    mounted = (
        not os.environ.get("JAX_VAE_TEST_NO_TMPFS")  # forces the patched faults, to test them here
        and os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def leftovers(root: Path) -> list[str]:
    """Temp files of the atomic write or unfinished orbax saves under root."""
    return [str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or "orbax-checkpoint-tmp" in p.name]


def fill_atomic_writes(monkeypatch, hits: Callable[[str], bool] = lambda prefix: True) -> None:
    """The atomic writes whose temp-file prefix `hits` accepts go to /dev/full (a full disk)."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, tmp = real_mkstemp(*args, **kwargs)
        if not hits(str(kwargs.get("prefix", ""))):
            return fd, tmp
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), tmp

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.fixture
def full_atomic_writes(monkeypatch):
    """Every atomic write (config, summary, images, reports, exports, compare) hits a full disk."""
    fill_atomic_writes(monkeypatch)


def _train(framework: str, out: Path, capsys, *extra: str):
    return run_main(framework, ["train", "--steps", "4", *TINY, "--out", str(out), *extra], capsys)


# --------------------------------------------------------------------------------- where --out is
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_out_under_a_file(tmp_path, capsys, framework):
    (tmp_path / "file").write_text("x")
    code, lines = _train(framework, tmp_path / "file" / "run", capsys)
    assert_one_line_error(code, lines, str(tmp_path / "file"), "Not a directory")
    assert tree_snapshot(tmp_path) == {"file": b"x"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_out_in_a_read_only_folder(tmp_path, capsys, monkeypatch, framework):
    ro = tmp_path / "ro"
    with tmpfs(ro, read_only=True) as mounted:
        if not mounted:  # a patched mkdir that refuses as a read-only file system does
            real_mkdir = os.mkdir

            def mkdir(path, *args, **kwargs):
                if str(path).startswith(str(ro)):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
                return real_mkdir(path, *args, **kwargs)

            monkeypatch.setattr(os, "mkdir", mkdir)
        code, lines = _train(framework, ro / "run", capsys)
        assert_one_line_error(code, lines, str(ro / "run"), "Read-only file system")
        assert not (ro / "run").exists()


# ------------------------------------------------------------------------------------- full disk
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_full_disk_at_a_checkpoint_save(tmp_path, capsys, monkeypatch, framework):
    """The run folder on a 16 KB tmpfs: config.json and metrics fit, the first checkpoint does not."""
    run = tmp_path / "run"
    with tmpfs(run) as mounted:
        if not mounted:  # patched: the checkpoint write fails as each framework's writer reports it
            _patch_full_checkpoints(monkeypatch, framework)
        code, lines = _train(framework, run, capsys, "--checkpoint-every", "2")
        assert_last_line_error(code, lines, FULL, "training stopped at step 2", "--resume")
        assert leftovers(run) == [] and not (run / "run.lock").exists()
        assert (run / runs.CONFIG_FILE).is_file()


def _patch_full_checkpoints(monkeypatch, framework: str) -> None:
    """Without a tmpfs: torch's checkpoint (through the atomic write) goes to /dev/full; orbax's save
    raises what orbax raises on a full disk (a ValueError carrying os_error_code)."""
    if framework == "torch":
        fill_atomic_writes(monkeypatch, lambda prefix: prefix.startswith(".ckpt_"))
        return
    import orbax.checkpoint as ocp

    def save(self, step, *args, **kwargs):
        raise ValueError(f"RESOURCE_EXHAUSTED: Failed writing step {step}: {FULL} [os_error_code='28']")

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_full_disk_in_the_metrics(tmp_path, capsys, monkeypatch, framework):
    real_open = open

    def open_full(path, mode="r", *args, **kwargs):
        target = "/dev/full" if str(path).endswith("metrics.jsonl") else path
        return real_open(target, mode, *args, **kwargs)

    monkeypatch.setattr(runs, "open", open_full, raising=False)
    code, lines = _train(framework, tmp_path / "run", capsys)
    assert_last_line_error(code, lines, "metrics.jsonl", FULL, "training stopped")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_full_disk_at_the_first_write(tmp_path, capsys, full_atomic_writes, framework):
    code, lines = _train(framework, tmp_path / "run", capsys)
    assert_one_line_error(code, lines, str(tmp_path / "run" / "config.json"), FULL)
    assert leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def runs_to_read(tmp_path_factory, one_torch_thread):  # noqa: F811 (a fixture: threads pinned first)
    from jax_vae.common import cli

    root = tmp_path_factory.mktemp("to_read")
    for framework in FRAMEWORKS:
        assert cli.main(["train", "--steps", "4", *TINY, "--out", str(root / framework)], framework) == 0
    return root


def test_full_disk_in_evaluate_export_compare_and_images(tmp_path, capsys, runs_to_read, full_atomic_writes):
    jax_run, torch_run = runs_to_read / "jax", runs_to_read / "torch"
    before = tree_snapshot(runs_to_read)
    report = tmp_path / "report.json"
    for framework, run in (("jax", jax_run), ("torch", torch_run)):
        args = ["evaluate", "--run", str(run), "--k", "2", "--num-images", "4", "--out", str(report)]
        assert_one_line_error(*run_main(framework, args, capsys), str(report), FULL)
    code, lines = run_main("jax", ["export", str(jax_run), "--out", str(tmp_path / "m.pt")], capsys)
    assert_one_line_error(code, lines, FULL)
    code, lines = run_main(
        "jax", ["compare", str(jax_run), str(torch_run), "--out", str(tmp_path / "c.png")], capsys
    )
    assert_one_line_error(code, lines, str(tmp_path / "c.png"), FULL)
    assert tree_snapshot(runs_to_read) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [] and leftovers(runs_to_read) == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_full_disk_at_the_images(tmp_path, capsys, monkeypatch, framework):
    """Training done, the images do not fit: one line naming the image, the checkpoint kept."""
    fill_atomic_writes(monkeypatch, lambda prefix: prefix.endswith(".png."))
    code, lines = run_main(
        framework,
        ["train", "--steps", "4", *TINY[:-2], "--no-progress", "--out", str(tmp_path / "run")],
        capsys,
    )
    assert_last_line_error(code, lines, ".png", FULL)
    assert leftovers(tmp_path) == [] and list((tmp_path / "run" / "checkpoints").iterdir())


# ------------------------------------------------------------------- checked before expensive work
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_evaluate_out_is_checked_before_the_evaluation(
    tmp_path, capsys, monkeypatch, runs_to_read, framework
):
    from jax_vae.common import backends

    backend = backends.get(framework)

    def no_work(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before --out was checked")

    monkeypatch.setattr(backends, "get", lambda name: dataclasses.replace(backend, load_params=no_work))
    (tmp_path / "file").write_text("x")
    args = ["evaluate", "--run", str(runs_to_read / framework), "--out", str(tmp_path / "file" / "r.json")]
    assert_one_line_error(*run_main(framework, args, capsys), str(tmp_path / "file"), "is a file")
    ro = tmp_path / "ro"
    with tmpfs(ro, read_only=True) as mounted:
        if mounted:
            args[-1] = str(ro / "r.json")
            assert_one_line_error(
                *run_main(framework, args, capsys), str(ro / "r.json"), "Read-only file system"
            )


def test_unreadable_data_folder(tmp_path, capsys, monkeypatch):
    source = Path(os.environ.get("JAX_VAE_DATA_DIR", "/nonexistent")) / "fashion-mnist"
    if not (source / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the Fashion-MNIST files are not in {source} (set JAX_VAE_DATA_DIR)")
    data = tmp_path / "data"
    shutil.copytree(source, data / "fashion-mnist")
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        if str(self).startswith(str(data)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    args = [
        "train",
        "--dataset",
        "fashion_mnist",
        "--data-dir",
        str(data),
        "--no-download",
        "--out",
        str(tmp_path / "r"),
    ]
    assert_one_line_error(*run_main("jax", args, capsys), str(data / "fashion-mnist"), "Permission denied")
    (tmp_path / "afile").write_text("x")
    args[4] = str(tmp_path / "afile")
    assert_one_line_error(*run_main("jax", args, capsys), "is a file, not a folder")
    assert not (tmp_path / "r").exists()


def test_evaluate_reads_the_data_folder_the_run_was_trained_on(tmp_path, capsys, monkeypatch):
    source = Path(os.environ.get("JAX_VAE_DATA_DIR", "/nonexistent")) / "fashion-mnist"
    if not (source / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the Fashion-MNIST files are not in {source} (set JAX_VAE_DATA_DIR)")
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(source, data / "fashion-mnist")
    args = ["train", "--preset", "pytorch-examples", "--dataset", "fashion_mnist", "--steps", "2", *TINY]
    assert (
        run_main("jax", [*args, "--data-dir", str(data), "--no-download", "--out", str(run)], capsys)[0] == 0
    )
    assert (runs.read_run(run) or {}).get("data_dir") == str(data.resolve())
    monkeypatch.delenv("JAX_VAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # no other copy to find
    evaluate = ["evaluate", "--run", str(run), "--k", "2", "--num-images", "4", "--no-download"]
    code, lines = run_main("jax", evaluate, capsys)
    assert code == 0, lines
    shutil.rmtree(data)  # gone: the default folder is searched, and the error says where it looked
    code, lines = run_main("jax", evaluate, capsys)
    assert_one_line_error(code, lines, "not found", str(tmp_path / "empty-cache"))


def test_full_disk_in_an_export_to_jax(tmp_path, capsys, monkeypatch, runs_to_read):
    """PyTorch weights -> a JAX params checkpoint (orbax) on a full disk: one line, no temp folder."""
    out_dir = tmp_path / "small"
    with tmpfs(out_dir, size="4k") as mounted:
        if not mounted:  # patched: orbax's save raises what it raises on a full disk
            import orbax.checkpoint as ocp

            def save(self, path, *args, **kwargs):
                raise ValueError(f"RESOURCE_EXHAUSTED: Failed writing {path}: {FULL} [os_error_code='28']")

            monkeypatch.setattr(ocp.Checkpointer, "save", save)
        args = ["export", str(runs_to_read / "torch"), "--to-jax", "--out", str(out_dir / "params")]
        assert_one_line_error(*run_main("jax", args, capsys), str(out_dir / "params"), FULL)
        assert list(out_dir.iterdir()) == []


def test_compare_out_is_checked_before_any_run_is_read(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    args = ["compare", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "file" / "c.png")]
    assert_one_line_error(*run_main("jax", args, capsys), str(tmp_path / "file"), "is a file")
