"""Bad input: one line `error: ...` on stderr, a non-zero exit, and nothing written or overwritten."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from jax_vae.common import cli as cli_module
from tests.helpers import FRAMEWORKS, TINY, assert_one_line_error, cli, run_main, tree_snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BAD_TRAIN_FLAGS = {
    "unknown preset": (["--preset", "nope"], ["unknown preset 'nope'", "stutz-rectangles"]),
    "unknown dataset": (["--dataset", "cifar10"], ["dataset='cifar10'"]),
    "zero lr": (["--lr", "0"], ["lr must be finite and > 0"]),
    "negative lr": (["--lr", "-0.001"], ["lr must be finite and > 0"]),
    "negative lr in exponent form": (["--lr", "-1e-3"], ["lr must be finite and > 0, got -0.001"]),
    "nan lr": (["--set", "lr=nan"], ["lr must be finite and > 0"]),
    "infinite beta": (["--set", "beta=inf"], ["beta must be finite and >= 0"]),
    "negative beta": (["--set", "beta=-1"], ["beta must be finite and >= 0"]),
    "zero adam eps": (["--set", "adam_eps=0"], ["adam_eps must be finite and > 0"]),
    "b1 of 1": (["--set", "b1=1"], ["b1 must be in [0, 1)"]),
    "negative b2": (["--set", "b2=-0.1"], ["b2 must be in [0, 1)"]),
    "zero samples": (["--set", "num_samples=0"], ["num_samples must be >= 1"]),
    "zero-width layer": (["--set", "encoder_hidden=16,0"], ["encoder_hidden must be layer widths >= 1"]),
    "micro-batch over the batch": (["--batch-size", "8", "--set", "micro_batch=9"], ["micro_batch must be"]),
    "negative seed": (["--seed=-1"], ["seed must be in [0, 2**32)"]),
    "negative seed, separate value": (["--seed", "-1"], ["seed must be in [0, 2**32)"]),
    "seed of 2**32 (JAX would wrap it to 0)": (["--seed", str(2**32)], ["seed must be in [0, 2**32)"]),
    "seed of 2**64": (["--seed", str(2**64)], ["seed must be in [0, 2**32)"]),
    "zero steps": (["--steps", "0"], ["--steps must be >= 1"]),
    "zero epochs": (["--epochs", "0"], ["--epochs must be >= 1"]),
    "zero epochs through --set": (["--set", "epochs=0", "--set", "steps=0"], ["nothing to train"]),
    "zero batch": (["--batch-size", "0"], ["batch_size must be >= 1"]),
    "negative batch": (["--batch-size", "-4"], ["batch_size must be >= 1"]),
    "batch larger than the dataset": (["--batch-size", "50001"], ["larger than the 50000 training images"]),
    "unknown --set key": (["--set", "depth=3"], ["unknown config key 'depth'"]),
    "bad --set value": (["--set", "latent_dim=two"], ["latent_dim expects int"]),
    "malformed --set": (["--set", "latent_dim"], ["--set expects KEY=VALUE"]),
    "non-integer epochs": (["--epochs", "ten"], ["--epochs", "invalid int value"]),
    "negative checkpoint cadence": (["--checkpoint-every", "-5"], ["checkpoint-every must be >= 0"]),
    "zero log cadence": (["--log-every", "0"], ["log-every must be >= 1"]),
    "unknown device": (["--device", "tpu9"], ["unknown device 'tpu9'"]),
    "resume without out": (["--resume"], ["--resume needs --out"]),
}


@pytest.mark.parametrize("case", BAD_TRAIN_FLAGS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_train_flags(tmp_path, capsys, framework, case):
    flags, needles = BAD_TRAIN_FLAGS[case]
    out = [] if case == "resume without out" else ["--out", str(tmp_path / "run")]
    length = [] if any(f in ("--steps", "--epochs") for f in flags) else ["--steps", "2"]
    code, lines = run_main(framework, ["train", *flags, *out, *length, "--no-download"], capsys)
    assert_one_line_error(code, lines, *needles)
    assert not (tmp_path / "run").exists()


def test_missing_gpu_is_one_line(tmp_path, capsys):
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is present")
    code, lines = run_main("jax", ["train", "--device", "gpu", "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, lines, "device 'gpu' is not available to JAX")
    assert not (tmp_path / "run").exists()


def _idx_header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)


BAD_IDX = {  # what lands in <data>/fashion-mnist/train-images-idx3-ubyte(.gz), and what the error names
    "corrupt gzip": (
        "train-images-idx3-ubyte.gz",
        lambda: b"\x1f\x8b\x08\x00" + b"\x07" * 64,
        "corrupt or truncated gzip",
    ),
    "bad magic": ("train-images-idx3-ubyte", lambda: b"\x00\x00\x09\x03" + b"\0" * 64, "bad magic number"),
    "truncated": (
        "train-images-idx3-ubyte.gz",
        lambda: gzip.compress(_idx_header((60000, 28, 28)) + b"\0" * 1000, 1),
        "truncated IDX file",
    ),
    "wrong checksum": (
        "train-images-idx3-ubyte.gz",
        lambda: gzip.compress(_idx_header((60000, 28, 28)) + bytes(60000 * 784), 1),
        "SHA-256 of the decompressed bytes",
    ),
}


@pytest.mark.parametrize("case", BAD_IDX)
def test_bad_idx_files_stop_before_anything_is_written(tmp_path, capsys, case):
    name, body, needle = BAD_IDX[case]
    bad = tmp_path / "data" / "fashion-mnist" / name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(body())
    before = tree_snapshot(tmp_path / "data")
    code, lines = run_main(
        "jax",
        [
            "train",
            "--dataset",
            "fashion_mnist",
            "--data-dir",
            str(tmp_path / "data"),
            "--no-download",
            "--out",
            str(tmp_path / "run"),
        ],
        capsys,
    )
    assert_one_line_error(code, lines, needle, str(bad))
    assert not (tmp_path / "run").exists() and tree_snapshot(tmp_path / "data") == before


# ------------------------------------------------------------------------- runs that already exist
@pytest.fixture(scope="module")
def tiny_cli_runs(tmp_path_factory, one_torch_thread):  # noqa: F811 (a fixture: threads pinned first)
    """A 3-step JAX and PyTorch run of stutz-rectangles and a JAX one of pytorch-examples (rectangles)."""
    root = tmp_path_factory.mktemp("cli_runs")
    runs = {"jax": root / "jax", "torch": root / "torch", "other": root / "other"}
    assert cli_module.main(["train", "--steps", "3", *TINY, "--out", str(runs["jax"])], framework="jax") == 0
    assert (
        cli_module.main(["train", "--steps", "3", *TINY, "--out", str(runs["torch"])], framework="torch") == 0
    )
    assert (
        cli_module.main(
            [
                "train",
                "--preset",
                "pytorch-examples",
                "--dataset",
                "rectangles",
                "--steps",
                "3",
                *TINY,
                "--out",
                str(runs["other"]),
            ],
            framework="jax",
        )
        == 0
    )
    return runs


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_out_dir_holding_a_run_needs_resume(tmp_path, capsys, tiny_cli_runs, framework):
    run = _copy(tiny_cli_runs[framework], tmp_path / "run")
    before = tree_snapshot(run)
    code, lines = run_main(framework, ["train", "--steps", "6", *TINY, "--out", str(run)], capsys)
    assert_one_line_error(code, lines, "already holds a run", "--resume")
    assert tree_snapshot(run) == before


def test_out_dir_with_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    code, lines = run_main("jax", ["train", "--steps", "2", *TINY, "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, lines, "not empty and holds no run")
    assert tree_snapshot(tmp_path / "run") == {"notes.txt": b"mine"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_with_another_preset_or_config_is_refused(tmp_path, capsys, tiny_cli_runs, framework):
    run = _copy(tiny_cli_runs[framework], tmp_path / "run")
    before = tree_snapshot(run)
    code, lines = run_main(
        framework, ["train", "--resume", "--preset", "pytorch-examples", "--out", str(run)], capsys
    )
    assert_one_line_error(code, lines, "is of preset 'stutz-rectangles', not 'pytorch-examples'")
    code, lines = run_main(framework, ["train", "--resume", "--lr", "0.5", "--out", str(run)], capsys)
    assert_one_line_error(code, lines, "lr: 0.001 -> 0.5")
    other = "torch" if framework == "jax" else "jax"
    code, lines = run_main(other, ["train", "--resume", "--out", str(run)], capsys)
    assert_one_line_error(code, lines, f"holds a {framework} run")
    assert tree_snapshot(run) == before


def test_a_checkpoint_of_another_preset_is_refused(tmp_path, capsys, tiny_cli_runs):
    """config.json says stutz-rectangles, the checkpoints are pytorch-examples': caught before writing."""
    run = _copy(tiny_cli_runs["jax"], tmp_path / "run")
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(tiny_cli_runs["other"] / "checkpoints", run / "checkpoints")
    before = tree_snapshot(run)
    code, lines = run_main("jax", ["train", "--resume", "--steps", "6", "--out", str(run)], capsys)
    assert_one_line_error(
        code, lines, "checkpoint", "is of preset 'pytorch-examples', not 'stutz-rectangles'"
    )
    assert tree_snapshot(run) == before


def test_export_errors(tmp_path, capsys, tiny_cli_runs):
    pt = tmp_path / "model.pt"
    assert run_main("jax", ["export", str(tiny_cli_runs["jax"]), "--out", str(pt)], capsys)[0] == 0
    before = pt.read_bytes()
    code, lines = run_main("jax", ["export", str(tiny_cli_runs["jax"]), "--out", str(pt)], capsys)
    assert_one_line_error(code, lines, "already exists")
    assert pt.read_bytes() == before
    code, lines = run_main(
        "jax", ["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.pt")], capsys
    )
    assert_one_line_error(code, lines, "does not exist")
    bare = tmp_path / "bare.pt"
    shutil.copy(pt, bare)
    code, lines = run_main("jax", ["export", str(bare), "--to-jax", "--out", str(tmp_path / "j")], capsys)
    assert_one_line_error(code, lines, "pass --preset")
    code, lines = run_main(
        "jax",
        ["export", str(bare), "--to-jax", "--preset", "pytorch-examples", "--out", str(tmp_path / "j")],
        capsys,
    )
    assert_one_line_error(code, lines, "pytorch-examples")
    code, lines = run_main(
        "jax", ["export", str(tiny_cli_runs["torch"]), "--out", str(tmp_path / "t.pt")], capsys
    )
    assert_one_line_error(code, lines, "is a PyTorch run")
    assert not (tmp_path / "j").exists() and not (tmp_path / "t.pt").exists()


def test_compare_needs_run_folders(tmp_path, capsys):
    code, lines = run_main("jax", ["compare", str(tmp_path), "--out", str(tmp_path / "c.png")], capsys)
    assert_one_line_error(code, lines, "is not a run folder")


@pytest.mark.parametrize(
    "framework,flags,needle",
    [("jax", ["--preset", "nope"], "unknown preset"), ("torch", ["--lr", "0"], "lr must be finite and > 0")],
)
def test_a_real_process_exits_2_with_one_line(tmp_path, framework, flags, needle):
    proc = cli(framework, "train", *flags, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
