"""The house's import rules, read from the source (ast): the layers of jax_vae/common import only
downward, the package graph has no cycle, our own modules are imported at module level only, and no
private name crosses a module boundary. A new violation fails here with the file and the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("jax_vae", "torch_reference")
# The layers of jax_vae/common, bottom up: a unit imports only units of a lower rank, or itself.
LAYERS = {
    "errors": 0,
    "files": 0,
    "metrics": 0,
    "data": 1,
    "config": 2,
    "backends": 3,
    "runs": 4,
    "weights": 5,
    "reporting": 5,
    "training": 6,
    "evaluation": 6,
    "cli": 7,
}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


MODULES = {
    _module_name(p): p
    for pkg in PACKAGES
    for p in sorted((REPO / pkg).rglob("*.py"))
    if "__pycache__" not in p.parts
}


def _own(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _imports(path: Path) -> list[tuple[ast.ImportFrom | ast.Import, str, list[str], bool]]:
    """(node, imported module, imported names, at module level) of every import of our own modules."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out: list[tuple[ast.ImportFrom | ast.Import, str, list[str], bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node, a.name, [], id(node) in top) for a in node.names if _own(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and _own(node.module):
            assert node.level == 0, f"{path}: relative import"
            out.append((node, node.module, [a.name for a in node.names], id(node) in top))
    return out


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import statement loads: `from pkg import mod` names a module, else the package."""
    found = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return found or [module]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        # importing a.b.c runs a/__init__ and a/b/__init__ too, except the importer's own packages,
        # which are running already (a package face may import its own modules)
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        for _, module, names, _ in _imports(path):
            parts = module.split(".")
            parents = {".".join(parts[:i]) for i in range(1, len(parts))}
            graph[name].update(
                t for t in {*_targets(module, names), *parents} if t in MODULES and t not in own
            )
    return graph


def _unit(module: str) -> str | None:
    """The layer unit of a jax_vae.common module: its package under common, or its own name."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["jax_vae", "common"] and len(parts) > 2 else None


def test_every_common_unit_has_a_layer():
    units = {_unit(m) for m in MODULES} - {None}
    assert units == set(LAYERS), f"units without a layer: {units - set(LAYERS)}; stale: {set(LAYERS) - units}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m)))
def test_common_layers_import_only_downward(module):
    unit = _unit(module)
    assert unit is not None
    for target in _graph()[module]:
        other = _unit(target)
        if other is None or other == unit:
            continue
        assert LAYERS[other] < LAYERS[unit], (
            f"{module} ({unit}, layer {LAYERS[unit]}) imports {target} ({other}, layer {LAYERS[other]})"
        )


def test_no_import_cycle():
    graph, state, stack = _graph(), dict.fromkeys(MODULES, 0), []

    def visit(m: str) -> None:  # 0 new, 1 on the stack, 2 done
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state[t] == 1:
                cycle = stack[stack.index(t) :] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state[t] == 0:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if state[m] == 0:
            visit(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_own_modules_are_imported_at_module_level_and_no_private_name_crosses(module):
    for node, target, names, top in _imports(MODULES[module]):
        assert top, f"{module}:{node.lineno} imports {target} inside a function or block"
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{module}:{node.lineno} imports private {private} from {target}"
