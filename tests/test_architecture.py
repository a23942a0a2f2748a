"""The layout shows the architecture: imports point one way, from commands down to primitives, and no
module imports itself back."""

from __future__ import annotations

import ast
from itertools import pairwise
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
    "jobs": 6, "bench": 6, "serve": 6,
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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALL_MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _ancestors(module: str) -> list[str]:
    """The packages above `module`, innermost first (`lifelora.a.b` → `lifelora.a`, `lifelora`)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _is_package(module: str) -> bool:
    return ALL_MODULES[module].name == "__init__.py"


def _import_edges(module: str) -> dict[str, int]:
    """The lifelora modules that importing `module` runs first, each with the line of the first import."""
    path = ALL_MODULES[module]
    package = module if _is_package(module) else module.rpartition(".")[0]
    own = {module, *_ancestors(module)}  # being imported already when `module` runs
    edges: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from a import b` imports the module a.b when there is one, else takes b from a
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in ALL_MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            if target not in ALL_MODULES:  # another package, or a missing module (an ImportError, no cycle)
                continue
            edges.setdefault(target, node.lineno)
            for package_above in _ancestors(target):  # Python runs the packages above it first
                if package_above not in own:
                    edges.setdefault(package_above, node.lineno)
    return edges


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _a_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest import cycle through the component's first module: each step names the module and
    the line of its import of the next."""
    start, inside = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node]):
            if target == start:
                cycle = [*paths[node], start]
                return [f"{a} (line {graph[a][b]})" for a, b in pairwise(cycle)] + [start]
            if target in inside and target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no cycle through {start}")


def test_no_import_cycles():
    """No lifelora module imports itself back, directly or through others.

    Every import statement counts, wherever it stands: at module level, inside a function or method
    (run late, but a cycle all the same), under `if TYPE_CHECKING:` (a cycle for type checkers and
    readers), in a try block. Importing `lifelora.a.b` counts as importing `lifelora.a` too (Python runs
    the package's `__init__` first), except for the packages the importing module itself sits in: they
    are being imported already when it runs. `from lifelora.a import b` imports the module `lifelora.a.b`
    when there is one, else the name `b` from `lifelora.a` (its `__init__`, or the module `lifelora.a`).
    """
    graph = {module: _import_edges(module) for module in ALL_MODULES}
    cycles = [
        " -> ".join(_a_cycle(graph, component))
        for component in _strongly_connected(graph)
        if len(component) > 1 or component[0] in graph[component[0]]
    ]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_is_longer_than_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
