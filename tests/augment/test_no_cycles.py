"""The module-level import graph of pixcore has no cycles (at least none in pixcore.augment).

Imports are read with :mod:`ast`; imports inside functions and under ``TYPE_CHECKING``
are left out (they run late, or never). ``from pkg import name`` counts as an import of
``pkg.name`` when that is a module, else of ``pkg``. A package's implicit import of its
parent ``__init__`` is not an edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pixcore
import pytest

ROOT = Path(pixcore.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements executed when the module is imported (not in defs, not TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                todo.extend(node.body)
            todo.extend(node.orelse)
        elif isinstance(node, ast.Try):
            todo.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                todo.extend(handler.body)
        elif isinstance(node, ast.With):
            todo.extend(node.body)
    return found


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    source = _resolve(module, node)
    out: set[str] = set()
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        if sub in MODULES:
            out.add(sub)
        elif source in MODULES:
            out.add(source)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the pixcore modules it imports at module level."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _top_level_imports(tree):
            edges |= _targets(name, node)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(result)


def test_graph_sees_the_augment_modules() -> None:
    graph = import_graph()
    assert "pixcore.augment._geometry" in graph["pixcore.augment._rules"]
    assert {"pixcore.augment._geometry", "pixcore.augment._rules"} <= graph[
        "pixcore.augment._builtin_rules"
    ]


def test_augment_has_no_import_cycles() -> None:
    found = [c for c in cycles(import_graph()) if any(m.startswith("pixcore.augment") for m in c)]
    assert not found, f"import cycles through pixcore.augment: {found}"


def test_geometries_do_not_import_the_rule_table() -> None:
    assert "pixcore.augment._rules" not in import_graph()["pixcore.augment._geometry"]


def test_other_cycles_in_the_core_are_reported() -> None:
    """Cycles elsewhere in the core are reported as a warning, not a failure (yet)."""
    found = cycles(import_graph())
    others = [c for c in found if not any(m.startswith("pixcore.augment") for m in c)]
    if others:
        warnings.warn(f"module-level import cycles in pixcore: {others}", stacklevel=1)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("pixcore.augment")))
def test_each_augment_module_imports_alone(module: str) -> None:
    """Each module of pixcore.augment imports first, in a fresh interpreter, and rules exist."""
    code = (
        f"import {module}\n"
        "from pixcore._targets import Image\n"
        "from pixcore.augment._rules import rule_for\n"
        "assert rule_for('flip', Image) is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
