"""The package's structure: a one-way import graph and short function bodies."""

from __future__ import annotations

import ast
import pathlib

import portable_softmax

PACKAGE = pathlib.Path(portable_softmax.__file__).parent
MAX_BODY_LINES = 60


def _module_name(path: pathlib.Path) -> str:
    parts = ["portable_softmax", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text("utf-8")) for p in PACKAGE.rglob("*.py")}


def _imports(name: str, tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its body (lazy imports too)."""
    found = set()
    package = name if name in _packages(modules) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from package import module`` imports the module.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def _packages(modules: set[str]) -> set[str]:
    return {m.rpartition(".")[0] for m in modules if "." in m}


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    return {name: _imports(name, tree, modules) for name, tree in sources.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_go_one_way():
    """Generic code and shared helpers never reach up into the fast paths or the public layer."""
    graph = _graph()
    lower = {
        "portable_softmax._compat": set(),
        "portable_softmax._problem": {"portable_softmax._compat"},
    }
    for name, allowed in lower.items():
        assert graph[name] <= allowed, (name, graph[name])
    for name, deps in graph.items():
        if name.startswith("portable_softmax._generic"):
            assert not any(d.startswith("portable_softmax._native") for d in deps), (name, deps)
        if name.startswith(("portable_softmax._generic", "portable_softmax._native")):
            public = {"portable_softmax._softmax", "portable_softmax._losses"}
            assert not deps & public, (name, deps)


def test_function_bodies_are_short():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body
            if ast.get_docstring(node) is not None:
                body = body[1:]
            if body and (n := node.end_lineno - body[0].lineno + 1) > MAX_BODY_LINES:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
