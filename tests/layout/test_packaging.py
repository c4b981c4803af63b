"""The wheel holds the library alone: jax_vae and torch_reference (with py.typed), the two console
scripts, and no parity_tests, benchmarks, tests or fixtures; its version is jax_vae.__version__."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jax_vae

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_library_alone(tmp_path):
    src = tmp_path / "src"  # a clean copy: a build/ left in the checkout could leak stale files in
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "runs", "__pycache__", ".*_cache")
    shutil.copytree(REPO, src, ignore=skip)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(tmp_path), str(src)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("jax_vae-*.whl")
    assert wheel.name.startswith(f"jax_vae-{jax_vae.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"jax_vae", "torch_reference"}, sorted(top)
    assert {"jax_vae/py.typed", "torch_reference/py.typed"} <= set(names)
    assert "jax_vae/common/training/loop.py" in names and "torch_reference/nn/models.py" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = configparser.ConfigParser()
    scripts.read_string(zipfile.ZipFile(wheel).read(entry_points).decode())
    assert dict(scripts["console_scripts"]) == {
        "jax-vae": "jax_vae.__main__:main",
        "torch-reference": "torch_reference.__main__:main",
    }
