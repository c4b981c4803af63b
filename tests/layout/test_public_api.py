"""The public face (docs/api.md): every name resolves where the page says, `import jax_vae` and
`import torch_reference` load no framework, and the page's example runs."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jax_vae
import torch_reference

REPO = Path(__file__).resolve().parents[2]
PAGE = (REPO / "docs" / "api.md").read_text()


def _documented() -> dict[tuple[str, str], str]:
    """(package section, name) -> the module its table row names ("same": the row above's)."""
    rows, section, module = {}, "", ""
    for line in PAGE.splitlines():
        if line.startswith("## "):
            section = "torch_reference" if "torch_reference" in line else "jax_vae"
        cells = [c.strip() for c in line.strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) == 3:
            module = module if cells[1].startswith("same") else cells[1].strip("`")
            for name in re.findall(r"`(\w+)", cells[0]):
                rows[(section, name)] = module
    return rows


@pytest.mark.parametrize("package", [jax_vae, torch_reference], ids=lambda p: p.__name__)
def test_every_public_name_resolves_to_its_documented_module(package):
    for name in package.__all__:
        if name == "__version__":
            continue
        module = package._PUBLIC[name]
        value = getattr(package, name)
        assert value is getattr(
            importlib.import_module(module), getattr(package, "_RENAMED", {}).get(name, name)
        )
        assert re.search(rf"`{re.escape(name)}[`(]", PAGE), (
            f"docs/api.md does not list {package.__name__}.{name}"
        )
        assert f"`{module}`" in PAGE or "same" in PAGE, f"docs/api.md does not name {module}"
    with pytest.raises(AttributeError):
        _ = package.no_such_name


@pytest.mark.parametrize("package", [jax_vae, torch_reference], ids=lambda p: p.__name__)
def test_no_public_name_is_also_a_submodule(package):
    """A submodule of the same name would replace the name once imported (jax_vae.train once did)."""
    clashes = [n for n in package.__all__ if importlib.util.find_spec(f"{package.__name__}.{n}") is not None]
    assert not clashes, clashes


def test_importing_the_packages_loads_no_framework():
    code = (
        "import json, sys, jax_vae, torch_reference\n"
        "cfg = jax_vae.get_preset('pytorch-examples'); opts = jax_vae.TrainOptions()\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"jax", "jaxlib", "flax", "optax", "orbax", "torch", "matplotlib"}, sorted(loaded)


def test_the_pages_example_runs():
    (block,) = re.findall(r"```python\n(.*?)```", PAGE, re.S)
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.fullmatch(r"loss \d+\.\d{3} nats per image\n", out.stdout), out.stdout


def test_importing_our_modules_changes_no_global_state():
    """Logging levels, filters and handlers, sys hooks and matplotlib are the same before and after
    importing every module of ours (the frameworks imported first: their own setup is theirs)."""
    code = """
import importlib, json, logging, pathlib, sys
import flax, jax, optax, orbax.checkpoint, safetensors, torch

def state():
    names = ["", "absl", "asyncio", "concurrent.futures", "jax", "orbax", "flax", "torch", "matplotlib"]
    logs = {n: [logging.getLogger(n).level, len(logging.getLogger(n).filters),
                len(logging.getLogger(n).handlers)] for n in names}
    return {"logging": logs, "hooks": [id(sys.unraisablehook), id(sys.excepthook), id(sys.displayhook)],
            "matplotlib": "matplotlib" in sys.modules}

before = state()
for pkg in ("jax_vae", "torch_reference"):
    for p in sorted(pathlib.Path(pkg).rglob("*.py")):
        name = ".".join(p.with_suffix("").parts).removesuffix(".__init__")
        if not name.endswith("__main__"):
            importlib.import_module(name)
print(json.dumps([before, state()]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = json.loads(out.stdout.splitlines()[-1])
    assert after == before
    assert not after["matplotlib"], "matplotlib is imported when a figure is made, not before"


def test_the_cli_starts_without_the_frameworks_or_matplotlib():
    """`jax-vae --help` imports the CLI alone: no framework, no matplotlib, no Pillow (what made it
    take seconds); about 0.3 s on the 2-core CI machine (README)."""
    code = (
        "import json, sys, jax_vae.common.cli\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    heavy = {"jax", "jaxlib", "flax", "optax", "orbax", "torch", "matplotlib", "PIL", "tensorboardX", "scipy"}
    assert not set(json.loads(out.stdout)) & heavy
