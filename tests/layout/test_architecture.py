"""The layout holds: a framework-free core in concern packages whose layers only import downward, no
import cycle, no function-level import of our own modules, no private name imported across modules;
two twins that never import each other, with the same files; three mirror model folders (Linen, NNX,
PyTorch); and public functions with the same names, parameters and return kinds (allowed differences
listed below, each with its reason)."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMON = REPO / "jax_vae" / "common"
TWINS = {"jax": REPO / "jax_vae", "torch": REPO / "torch_reference"}
# The three model implementations: the same files (NNX adds its own step styles).
MODEL_FOLDERS = {
    "linen": REPO / "jax_vae" / "linen",
    "nnx": REPO / "jax_vae" / "nnx",
    "torch": REPO / "torch_reference" / "nn",
}
NNX_ONLY_FILES = {
    "step.py": "the NNX train steps (nnx.Optimizer + nnx.jit, and split/merge + jax.jit) over step.py"
}
JAX_ONLY_FILES = {
    "parallel.py": "data-parallel training over a jax.sharding mesh",
    "conv_ops.py": "the conv / BatchNorm math with CPU custom VJPs both JAX APIs call (torch: F.conv2d)",
    "chunk.py": "the whole-chunk lax.scan of train steps; torch runs one step call at a time",
}
JAX_ONLY_FOLDERS = {"nnx": "the second JAX model API (Flax NNX) over the Linen params tree"}
FRAMEWORK_ROOTS = {"jax", "jaxlib", "flax", "optax", "orbax", "torch", "torchvision"}

# Parameter names that differ for a reason the frameworks force.
RENAMES = {
    "model": "params",  # torch parameters live in the nn.Module; JAX passes the params tree
    "generator": "key",  # torch draws from a stateful Generator; JAX from an explicit key
    "eps_or_generator": "eps_or_key",
}
# (module, name): why it exists on one side only.
ONE_SIDED = {
    ("optim", "lua_adam"): "JAX: an optax transform; torch optimizers are classes (LuaAdam)",
    ("optim", "LuaAdam"): "torch: a torch.optim.Optimizer subclass; JAX has the lua_adam transform",
    ("optim", "LuaAdamState"): "JAX: the optax state of lua_adam; torch keeps it in Optimizer.state",
    ("optim", "Transform"): "torch: optax's GradientTransformation has no torch counterpart to return",
    ("optim", "exponential_lr_schedule"): "JAX: the per-epoch exponential as an optax schedule of the step "
    "count; torch steps its own ExponentialLR (EpochExponentialLR)",
    ("optim", "EpochExponentialLR"): "torch: ExponentialLR stepped once per epoch by the per-step scheduler "
    "call; JAX has exponential_lr_schedule",
    ("trainer", "programs"): "JAX: the one program cache",
    ("trainer", "program_config"): "JAX: the config fields that shape a compiled program",
    ("checkpoint", "quiet_orbax"): "JAX: orbax's logs and late thread errors held back around its calls",
    ("checkpoint", "read_quietly"): "JAX: an orbax read, its abandoned reads collected quietly",
    ("checkpoint", "local_target"): "JAX: orbax's restore target on this process's device; torch: CPU",
    ("checkpoint", "torch_load"): "torch: torch.load(weights_only=True), one-line errors; JAX reads orbax",
    ("trainer", "set_threads"): "torch: the intra-op thread count, set per run; XLA's are fixed at start",
    ("trainer", "Programs"): "JAX: the compiled programs of one program key; eager torch compiles nothing",
    ("models", "init_variables"): "JAX: Flax variables, params and BatchNorm batch_stats; a torch module "
    "holds both (parameters and buffers), init_params returns it",
    ("models", "init_weights"): "JAX: init_variables as the weights tree (models.weights); torch's module "
    "is its weights",
    ("models", "weights"): "JAX: (params, batch_stats) -> the weights a checkpoint or export holds; a torch "
    "state_dict holds parameters and buffers together",
    ("models", "split_weights"): "JAX: the weights -> (params, batch_stats), as weights' inverse",
    ("models", "variables"): "JAX: the weights -> the Flax variables apply takes; torch calls its module",
}
# (module, function): why its parameters differ beyond RENAMES.
SIGNATURES = {
    ("functional", "sample_eps"): "torch creates tensors on an explicit device; JAX places by jit/default",
    (
        "functional",
        "as_eps",
    ): "torch draws on x's device and dtype (x); JAX takes the dtype and places by jit",
    ("models", "init_params"): "torch layers draw from the (forked) global RNG seeded with an int; JAX "
    "takes a key",
    ("optim", "iwae_lr_schedule"): "torch's LambdaLR scales the optimizer's own lr: no lr argument",
    ("optim", "make_optimizer"): "torch: foreach/fused implementation switches (parity pins them off)",
    ("step", "update"): "JAX: tx, data-parallel shards and apply_loss (the Linen or NNX loss) are "
    "arguments; torch keeps its optimizer in the state, has no data-parallel mode and one model API",
    ("step", "train_step"): "as update",
    ("step", "make_train_step"): "as update: torch's optimizer lives in the state",
    ("losses", "loss_fn"): "JAX: BatchNorm's running statistics in and out (batch_stats) and the mode "
    "(train) are arguments; a torch module holds them as buffers and its train()/eval() mode",
    ("step", "create_state"): "as losses.loss_fn: JAX's state carries batch_stats, torch's model its buffers",
    ("step", "value_and_grad"): "JAX-only data-parallel shards (micro-batches span every device) and "
    "apply_loss (the Linen or NNX loss)",
}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _twin_files(framework: str) -> set[str]:
    return {p.name for p in TWINS[framework].glob("*.py")}


def _py_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def test_twins_have_the_same_files():
    assert _twin_files("jax") - set(JAX_ONLY_FILES) == _twin_files("torch")
    assert set(JAX_ONLY_FILES) <= _twin_files("jax"), "a JAX-only file listed here no longer exists"
    folders = lambda root: {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    assert folders(TWINS["jax"]) - {"common", "linen", *JAX_ONLY_FOLDERS} == folders(TWINS["torch"]) - {"nn"}


def test_the_three_model_folders_hold_the_same_files():
    files = {api: {p.name for p in folder.glob("*.py")} for api, folder in MODEL_FOLDERS.items()}
    assert files["linen"] == files["torch"], f"linen vs torch_reference/nn: {files['linen'] ^ files['torch']}"
    assert files["nnx"] - set(NNX_ONLY_FILES) == files["linen"], f"{files['nnx'] ^ files['linen']}"


@pytest.mark.parametrize("framework", sorted(TWINS))
def test_a_twin_never_imports_the_other(framework):
    other, other_roots = (
        ("torch_reference", {"torch", "torchvision"})
        if framework == "jax"
        else ("jax_vae.", {"jax", "jaxlib", "flax", "optax", "orbax"})
    )
    for path in _py_files(TWINS[framework]):
        if path.is_relative_to(COMMON):
            continue
        for name in _imports(path):
            bad = name.startswith(other) and not name.startswith("jax_vae.common")
            assert not bad and name.split(".")[0] not in other_roots, f"{path.name} imports {name}"


def test_common_imports_no_framework_and_no_twin():
    for path in _py_files(COMMON):
        for name in _imports(path):
            root = name.split(".")[0]
            twin = name.startswith("torch_reference") or (
                name.startswith("jax_vae.") and not name.startswith("jax_vae.common")
            )
            assert root not in FRAMEWORK_ROOTS and not twin, f"{path.relative_to(REPO)} imports {name}"


def test_every_common_module_imports_without_jax_or_torch():
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in _py_files(COMMON)
    )
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} | "
        "{n for n in sys.modules if n.startswith(('jax_vae.', 'torch_reference'))})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & FRAMEWORK_ROOTS, f"loaded {sorted(loaded & FRAMEWORK_ROOTS)}"
    twins = {
        n
        for n in loaded
        if n.startswith("torch_reference")
        or (n.startswith("jax_vae.") and not n.startswith("jax_vae.common"))
    }
    assert not twins, f"loaded twin modules {sorted(twins)}"


def _public(module) -> dict[str, Any]:
    """Functions and classes defined in `module` (not imported), by name, without leading _."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    }


def _params(fn) -> list[str]:
    return [RENAMES.get(p, p) for p in inspect.signature(fn).parameters]


def _return_kind(fn) -> str:
    """'tuple of N', 'None' or 'value', from the return annotation."""
    ret = str(inspect.signature(fn).return_annotation)
    if ret.startswith("tuple["):
        depth, parts = 0, 1
        for ch in ret[len("tuple[") : -1]:
            depth += ch == "["
            depth -= ch == "]"
            parts += ch == "," and depth == 0
        return f"tuple of {parts}"
    return "None" if ret == "None" else "value"


# A module of the PyTorch twin -> its JAX mirror (the Linen models for torch_reference/nn). The file stems
# are unique across both folders, so the tables above name a module by its stem.
def _pairs() -> dict[str, tuple[str, str]]:
    pairs = {}
    for path in sorted([*TWINS["torch"].glob("*.py"), *MODEL_FOLDERS["torch"].glob("*.py")]):
        if path.stem not in ("__init__", "__main__"):
            nested = path.parent == MODEL_FOLDERS["torch"]
            jax_name = f"jax_vae.linen.{path.stem}" if nested else f"jax_vae.{path.stem}"
            torch_name = f"torch_reference.nn.{path.stem}" if nested else f"torch_reference.{path.stem}"
            pairs[path.stem] = (jax_name, torch_name)
    return pairs


PAIRS = _pairs()


@pytest.mark.parametrize("module", sorted(PAIRS))
def test_twin_public_signatures_mirror(module):
    jax_mod = importlib.import_module(PAIRS[module][0])
    torch_mod = importlib.import_module(PAIRS[module][1])
    pj, pt = _public(jax_mod), _public(torch_mod)
    for name in sorted(pj.keys() ^ pt.keys()):
        assert (module, name) in ONE_SIDED, f"{module}.{name} exists on one side only"
    for name in sorted(pj.keys() & pt.keys()):
        a, b = pj[name], pt[name]
        if inspect.isclass(a):
            ma = {n for n, _ in inspect.getmembers(a, inspect.isfunction) if not n.startswith("_")}
            mb = {n for n, _ in inspect.getmembers(b, inspect.isfunction) if not n.startswith("_")}
            flax_or_torch = {
                "setup",
                "forward",
                "apply",
                "init",
                "bind",
                "param",
                "variable",
                "tabulate",
                "is_initializing",
                "is_mutable_collection",
                "has_rng",
                "make_rng",
                "sow",
                "put_variable",
                "get_variable",
                "has_variable",
                "perturb",
                "unbind",
                "lazy_init",
                "copy",
                "clone",
                "module_paths",
                "init_with_output",
                "path",
                "replace",
            }  # flax.struct.dataclass's functional update
            if not (set(inspect.getmro(a)) & set(inspect.getmro(b)) - {object}):
                ma, mb = ma - flax_or_torch - _inherited(a), mb - flax_or_torch - _inherited(b)
            assert ma == mb, f"{module}.{name}: methods {sorted(ma ^ mb)} on one side only"
            for method in sorted(ma & mb):
                _check_function(module, f"{name}.{method}", getattr(a, method), getattr(b, method))
        else:
            _check_function(module, name, a, b)


def _inherited(cls) -> set[str]:
    """Public methods a class gets from a framework base class (nn.Module, flax Module, Protocol)."""
    return {n for base in cls.__mro__[1:] for n, _ in inspect.getmembers(base, inspect.isfunction)}


def _check_function(module: str, name: str, a, b) -> None:
    if (module, name) in SIGNATURES:
        return
    assert _params(a) == _params(b), f"{module}.{name}: parameters {_params(a)} vs {_params(b)}"
    assert _return_kind(a) == _return_kind(b), (
        f"{module}.{name}: returns {_return_kind(a)} vs {_return_kind(b)}"
    )


def test_allowed_differences_are_all_still_needed():
    """Every row of ONE_SIDED and SIGNATURES names a real difference (no stale exceptions)."""
    for module, name in ONE_SIDED:
        sides = [name in _public(importlib.import_module(m)) for m in PAIRS[module]]
        assert sides.count(True) == 1, f"ONE_SIDED {module}.{name}: on {sides.count(True)} sides"
    for module, name in SIGNATURES:
        fns = [_public(importlib.import_module(m))[name] for m in PAIRS[module]]
        assert _params(fns[0]) != _params(fns[1]), f"SIGNATURES {module}.{name}: the parameters agree"
