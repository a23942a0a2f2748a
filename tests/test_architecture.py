"""The layout shows the architecture: imports point one way, from commands down to primitives."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lifelora"
# a package may import its own modules and anything in a lower layer, nothing beside or above it
LAYERS = {
    "errors": 0, "io": 0, "precision": 0, "config": 0, "run": 0, "report": 0, "distributed": 0,
    "data": 1, "metrics": 1,
    "training": 2, "adapters": 2, "llm": 2,
    "lens": 3,
    "tasks": 4,
    "continual": 5,
    "jobs": 6, "bench": 6,
    "cli": 7,
}  # fmt: skip
ENTRY_POINTS = {"__init__", "__main__"}  # the package root re-exports errors; `python -m` calls the cli


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lifelora."):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("lifelora.")]
    return found


MODULES = sorted(
    p
    for p in PACKAGE.rglob("*.py")
    if p.relative_to(PACKAGE).parts[0].removesuffix(".py") not in ENTRY_POINTS
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    source = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    assert source in LAYERS, f"{source}: a new top-level module needs a layer in this test"
    for target in _imports(path):
        part = _part(target)
        assert part in LAYERS, f"{path.name} imports {target}: unknown package"
        same_package = part == source or LAYERS[part] == LAYERS[source] == 0  # primitives use each other
        assert same_package or LAYERS[part] < LAYERS[source], (
            f"{path.relative_to(PACKAGE)} (layer {LAYERS[source]}) imports {target} (layer {LAYERS[part]})"
        )


def test_no_module_is_much_longer_than_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long
