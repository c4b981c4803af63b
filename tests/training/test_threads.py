"""--threads: validated (auto or N >= 1), applied by the torch trainer and evaluation
(torch.get_num_threads), set for JAX before jax starts (the CPUs the process may use), and recorded
in config.json's options and the torch device name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jax_vae.common import cli as cli_module
from jax_vae.common.config.options import EvalOptions, TrainOptions, thread_count
from jax_vae.common.errors import RunError
from tests.helpers import REPO, cli, tiny_config, tiny_data

TINY = ["--set", "encoder_hidden=8", "--set", "decoder_hidden=8", "--no-images", "--no-progress"]


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_threads_must_be_auto_or_a_positive_integer(bad: str) -> None:
    with pytest.raises(RunError, match="threads must be auto or an integer N >= 1"):
        TrainOptions(threads=bad).check()
    with pytest.raises(RunError, match="threads must be auto or an integer N >= 1"):
        thread_count(bad, "torch")


def test_thread_count() -> None:
    """auto: 1 torch thread (OpenMP spin-waits collapse on a busy CPU), every CPU for JAX."""
    assert thread_count("auto", "torch", cpus=2) == 1 and thread_count("auto", "torch", cpus=64) == 1
    assert thread_count("auto", "jax", cpus=2) == 2 and thread_count("auto", "jax", cpus=64) == 64
    for fw in ("jax", "torch"):
        assert thread_count("1", fw, cpus=2) == 1 and thread_count("2", fw, cpus=2) == 2
        assert thread_count("8", fw, cpus=2) == 2  # never more than the CPUs the process may use
    TrainOptions(threads="3").check()
    assert TrainOptions().threads == "auto" == EvalOptions().threads
    assert TrainOptions(threads="2").persisted()["threads"] == "2"  # config.json records it


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cli_rejects_bad_threads_in_one_line(framework: str, command: str, tmp_path: Path, capsys) -> None:
    args = ["--out", str(tmp_path / "run"), *TINY] if command == "train" else ["--run", str(tmp_path)]
    code = cli_module.main([command, *args, "--threads", "0"], framework=framework)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and lines == ["error: threads must be auto or an integer N >= 1, got '0'"], lines
    assert not (tmp_path / "run").exists()


def test_evaluate_flag_reaches_eval_options() -> None:
    args = cli_module.build_parser("torch").parse_args(["evaluate", "--run", "x", "--threads", "2"])
    assert args.threads == "2"
    assert cli_module.build_parser("jax").parse_args(["evaluate", "--run", "x"]).threads == "auto"


@pytest.mark.parametrize("threads, want", [("1", 1), ("2", 2), ("auto", 1)])
def test_torch_trainer_sets_its_threads(threads: str, want: int, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch_reference.trainer import Trainer

    before = torch.get_num_threads()
    try:
        trainer = Trainer(tiny_config(), tiny_data(), TrainOptions(threads=threads), tmp_path / "ckpt")
        assert torch.get_num_threads() == min(want, thread_count("8", "torch"))
        assert trainer.device_name() == f"cpu ({torch.get_num_threads()} threads)"
    finally:
        torch.set_num_threads(before)


def test_torch_evaluation_sets_its_threads() -> None:
    torch = pytest.importorskip("torch")
    from torch_reference import backend
    from torch_reference.nn.models import init_params

    cfg = tiny_config()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        params = init_params(0, cfg).state_dict()
        x = tiny_data()["test"][:4]
        _, device = backend.evaluate(params, x, cfg, "none", EvalOptions(k=2, batch_size=4, threads="1"))
        assert torch.get_num_threads() == 1 and device == "cpu (1 threads)"
    finally:
        torch.set_num_threads(before)


def test_torch_run_records_its_threads(tmp_path: Path) -> None:
    proc = cli("torch", "train", "--steps", "2", "--threads", "1", "--out", str(tmp_path / "run"), *TINY)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert config["options"]["threads"] == "1" and summary["device"] == "cpu (1 threads)"


def test_jax_threads_are_set_before_jax_starts() -> None:
    """XLA sizes its CPU pool from the CPUs the process may use: apply_threads keeps the first N."""
    code = (
        "import os, sys; from jax_vae.common import cli; assert 'jax' not in sys.modules; "
        "n = cli.apply_threads('1', 'jax'); import jax; jax.numpy.zeros(2).block_until_ready(); "
        "print(n, len(os.sched_getaffinity(0)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1"]
    auto = subprocess.run(
        [sys.executable, "-c", code.replace("'1', 'jax'", "'auto', 'jax'")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.split() == [str(thread_count("auto", "jax"))] * 2  # every CPU: no change
