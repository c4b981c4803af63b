"""Shared helpers of the tests (imported as tests.helpers): a tiny preset variant, tiny data, run-folder
readers, CLI runners, and the environment of a test's worker processes. Fixtures are in conftest.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jax_vae.common import backends
from jax_vae.common import cli as cli_module
from jax_vae.common.config.options import TrainOptions
from jax_vae.common.config.presets import get_preset
from jax_vae.common.config.vae_config import VAEConfig
from jax_vae.common.training import loop

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("jax", "torch")
TIMING_KEYS = ("images_per_s", "chunk_images_per_s", "train_s", "wall_s")


def tiny_config(**changes: Any) -> VAEConfig:
    """stutz-rectangles shrunk to 8x8 inputs and 16 hidden units: a run takes well under a second."""
    base = dict(input_dim=64, encoder_hidden=(16,), decoder_hidden=(16,), batch_size=8, epochs=2, steps=0)
    return dataclasses.replace(get_preset("stutz-rectangles"), **{**base, **changes})


def tiny_data(n: int = 100, m: int = 40, seed: int = 0, grey: bool = False) -> dict[str, np.ndarray]:
    """Random 8x8 images: binary by default, grey levels (for dynamic binarization) with grey=True."""
    rng = np.random.default_rng(seed)
    draw = (
        (lambda k: rng.random((k, 64), dtype=np.float32))
        if grey
        else (lambda k: (rng.random((k, 64)) < 0.3).astype(np.float32))
    )
    return {"train": draw(n), "test": draw(m)}


def train_fn(framework: str) -> Callable[..., dict[str, Any]]:
    """loop.train with `framework`'s backend, the run options given as keywords."""
    backend = backends.get(framework)

    def train(
        cfg: VAEConfig,
        run_dir: Path,
        *,
        data: dict[str, np.ndarray] | None = None,
        log: Callable[[str], None] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        return loop.train(backend, cfg, run_dir, TrainOptions(**options), data=data, log=log)

    return train


def load_params(framework: str, run_dir: Path, step: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Final (or `step`) parameters of a run as {name: numpy array} plus the checkpoint meta."""
    if framework == "jax":
        from jax_vae.checkpoint import load_params as load

        params, meta = load(run_dir, step)
        flat = {
            jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
        }
        return flat, meta
    from torch_reference.checkpoint import load_params as load

    state, meta = load(run_dir, step)
    return {k: v.numpy() for k, v in state.items()}, meta


def assert_bit_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), (
            f"{key}: max |diff| {np.max(np.abs(a[key].astype(np.float64) - b[key])):.3g}"
        )


def metric_records(run_dir: Path, drop_timing: bool = True) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    if drop_timing:
        records = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]
    return records


def cli(
    framework: str, *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m <package> ...` in a fresh process (as a user would)."""
    package = "jax_vae" if framework == "jax" else "torch_reference"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", package, *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
    )


def tree_snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under `path` with its bytes (None when `path` does not exist)."""
    path = Path(path)
    if not path.exists():
        return None
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the CLI called in-process
TINY = ["--set", "encoder_hidden=8", "--set", "decoder_hidden=8", "--no-images", "--no-progress"]


def run_main(framework: str, args: list[str], capsys) -> tuple[int | str | None, list[str]]:
    """(exit code, stderr lines) of the CLI called in-process; argparse errors exit through SystemExit."""
    code: int | str | None  # SystemExit.code may be any of these
    try:
        code = cli_module.main(args, framework=framework)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def assert_one_line_error(code: int | str | None, lines: list[str], *needles: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_last_line_error(code: int | str | None, lines: list[str], *needles: str) -> None:
    """A run that failed after it started: its start line (and notes), then one `error: ...` line."""
    assert code == 2, lines
    assert lines and lines[-1].startswith("error: "), lines
    assert all(line.startswith(("jax: ", "torch: ", "note: ")) for line in lines[:-1]), lines
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def subprocess_env(devices: int) -> dict[str, str]:
    """A worker process's environment: JAX on `devices` CPU devices, the checkout importable (tests,
    parity_tests, benchmarks run from it)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags, PYTHONPATH=path)


def wait_all(procs: list[subprocess.Popen[str]], timeout: float = 600) -> None:
    """Wait for worker processes; a failed one fails the test with its output's tail."""
    for proc in procs:
        output, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{output[-4000:]}"
