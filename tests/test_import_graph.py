"""The package's import graph has no cycle and no upward edge (docs/architecture.md).

Every ``import`` of the package is read with ``ast`` (module level, inside functions and
under ``TYPE_CHECKING`` alike: a lazy import is still a dependency), resolved to a module
of ``llmc_format`` and checked against the layer order below. Built-in codecs named by
string in ``codecs/registry.py`` are plugins the registry loads, not imports.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "llmc_format"

#: Lowest first. A module may import its own layer and any layer below it, never above.
#: Each entry is a module or a package prefix; every module must fall into one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("llmc_format.errors", "llmc_format.dtypes", "llmc_format.units", "llmc_format.version",
              "llmc_format.metrics", "llmc_format.runtime", "llmc_format.naming", "llmc_format.plaindata",
              "llmc_format.outfiles")),
    ("container", ("llmc_format.container",)),
    ("codecs", ("llmc_format.codecs",)),
    ("quant", ("llmc_format.quant",)),
    ("decode", ("llmc_format.decode",)),
    ("io", ("llmc_format.io",)),
    ("rd", ("llmc_format.rd",)),
    ("pipeline", ("llmc_format.pipeline",)),
    ("public", ("llmc_format.api", "llmc_format.transformers", "llmc_format.cli",
                "llmc_format.inspect_view", "llmc_format.progress_view", "llmc_format.rd_plot",
                "llmc_format")),
]

#: Upward edges that exist today and are being removed (issue 19); must only shrink.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    """The ``llmc_format`` modules an import statement loads (the deepest existing one)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")[: None if is_package else -1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" for a in node.names]
    out = []
    for name in names:
        if name != "llmc_format" and not name.startswith("llmc_format."):
            continue
        while name not in MODULES:  # `from pkg import function` -> pkg
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


@functools.cache
def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(module, node, path.name == "__init__.py"):
                    if target != module:
                        edges.setdefault(target, node.lineno)
    return graph


def layer_of(module: str) -> int:
    """Index in ``LAYERS`` of the longest matching prefix; KeyError if none matches."""
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the package facade ("llmc_format") is one module, not a prefix of all of them
            inside = prefix != "llmc_format" and module.startswith(prefix + ".")
            if (module == prefix or inside) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    if best is None:
        raise KeyError(module)
    return best


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"place these in LAYERS (and docs/architecture.md): {unplaced}"


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_upward_import() -> None:
    upward = []
    for module, edges in import_graph().items():
        for target, line in edges.items():
            if layer_of(target) > layer_of(module) and (module, target) not in KNOWN_UPWARD:
                upward.append(f"{module}:{line} imports {target} "
                              f"({LAYERS[layer_of(module)][0]} < {LAYERS[layer_of(target)][0]})")
    assert not upward, "\n".join(upward)


def test_known_upward_edges_still_exist() -> None:
    """An exception that no longer exists is removed from ``KNOWN_UPWARD`` (it only shrinks)."""
    graph = import_graph()
    stale = [edge for edge in KNOWN_UPWARD if edge[1] not in graph.get(edge[0], {})]
    assert not stale


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b": 1}, "b": {"a": 1}, "c": {"a": 1}}, [["a", "b"]]),
    ({"a": {"b": 1}, "b": {"c": 1}, "c": {}}, []),
    ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}, [["a", "b", "c"]]),
])
def test_cycle_finder(graph: dict[str, dict[str, int]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    # function-level import in the package facade
    assert "llmc_format.api" in graph["llmc_format"]
    assert "llmc_format.codecs.base" in graph["llmc_format.codecs.registry"]


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_package_and_tests_import_no_tools_or_research() -> None:
    """``tools/`` (user-facing scripts) and ``research/`` (probes) are not installed: the
    package never imports them, and neither do the tests, except ``tests/tools`` (the
    tools' own tests)."""
    tests = PKG.parent / "tests"
    files = [*MODULES.values(), *(p for p in tests.rglob("*.py") if "tools" not in
                                  p.relative_to(tests).parts[:1])]
    offending = [str(p.relative_to(PKG.parent)) for p in files
                 if _imported_roots(p) & {"tools", "research"}]
    assert not offending
