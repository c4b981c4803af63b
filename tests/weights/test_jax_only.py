"""A JAX-only install (no torch): JAX training and safetensors exports work, and every path that needs
PyTorch stops with one line saying how to install it, with nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = "pip install 'jax-vae[torch]'"
# torch made unimportable (as without the extra), then the CLI called in-process
PRELUDE = "import sys; sys.modules['torch'] = None\nfrom jax_vae.common import cli\n"


def _cli(framework: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + f"sys.exit(cli.main({args!r}, framework={framework!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("jax-only") / "run"
    tiny = ["--set", "encoder_hidden=8", "--set", "decoder_hidden=8", "--no-images", "--no-progress"]
    done = _cli("jax", ["train", "--steps", "3", *tiny, "--out", str(run)])
    assert done.returncode == 0, done.stderr[-2000:]
    return run


def test_export_writes_safetensors_by_default_without_torch(jax_run, tmp_path):
    out = tmp_path / "model"
    done = _cli("jax", ["export", str(jax_run), "--out", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes()[8:9] == b"{"  # a safetensors header (8-byte length, then JSON), not a zip


@pytest.mark.parametrize(
    "framework,args",
    [
        ("jax", ["export", "RUN", "--out", "OUT/model.pt"]),
        ("jax", ["export", "RUN", "--out", "OUT/model", "--format", "pt"]),
        ("torch", ["train", "--steps", "1", "--out", "OUT/run"]),
        ("torch", ["evaluate", "--run", "RUN", "--k", "2"]),
    ],
    ids=["jax-export-pt", "jax-export-format-pt", "torch-train", "torch-evaluate"],
)
def test_a_path_that_needs_torch_says_how_to_install_it(jax_run, tmp_path, framework, args):
    args = [a.replace("RUN", str(jax_run)).replace("OUT", str(tmp_path)) for a in args]
    done = _cli(framework, args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: ") and INSTALL in lines[0] and "torch" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
