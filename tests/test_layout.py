"""The package's layout: small modules that import each other without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import workerstate

PACKAGE = Path(workerstate.__file__).parent
# The presets catalogue is a list of independent entries, documented one by one.
LONG_ALLOWED = {"presets.py"}
MAX_LINES = 500


def _imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workerstate."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found - {"__init__"}


def test_no_module_is_too_long() -> None:
    long = {
        path.name: lines
        for path in PACKAGE.glob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
        and path.name not in LONG_ALLOWED
    }
    assert long == {}


def test_modules_import_each_other_without_cycles() -> None:
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            cycles.append([*stack[stack.index(module) :], module])
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*stack, module])

    for module in sorted(graph):
        if module != "__init__":
            visit(module, [])
    assert cycles == []
