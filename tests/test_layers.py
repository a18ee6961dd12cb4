"""The layers point down (DESIGN.md): no import cycle among ``server`` modules, and the protocol
core ``server/activitypub/`` imports neither a domain module nor the edges.

Imports are read with ``ast`` from the source, function-local ones included: an import moved
into a function to dodge a cycle at import time is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parent.parent / "server"

# What the protocol core may build on: the foundation, and itself.
FOUNDATION = {
    "server.models",
    "server.db",
    "server.urls",
    "server.errors",
    "server.config",
    "server.context",
    "server.content",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SERVER.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SERVER.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from server import assemblies`` imports the module server.assemblies.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "server":
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {d for d in _imports(path, known) if d != name and not name.startswith(d + ".")}
        for name, path in modules.items()
    }


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_function_local_imports() -> None:
    tree = {
        "server.a": {"server.b"},
        "server.b": {"server.a"},
    }
    assert _cycle(tree) == ["server.a", "server.b", "server.a"]
    assert "server.models" in graph()["server.activitypub.actors"]


def test_no_import_cycle() -> None:
    assert _cycle(graph()) is None


def test_protocol_core_imports_only_the_foundation() -> None:
    offending = {
        name: sorted(
            dep
            for dep in deps
            if not dep.startswith("server.activitypub") and dep not in FOUNDATION
        )
        for name, deps in graph().items()
        if name.startswith("server.activitypub")
    }
    assert {name: deps for name, deps in offending.items() if deps} == {}
