"""The import structure a newcomer can rely on, read from the source with ``ast``: the library never
imports a service, ``switchboard.agents`` never imports ``switchboard.models`` (models read agents'
configuration, not the reverse), and the library's packages import each other without cycles."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBS = ROOT / "libs"
SERVICES = ("switchboard_edge", "switchboard_agent", "switchboard_supervisor")

KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {
    ("telemetry", "local"): "telemetry.otlp_receiver, a test double, runs on local.asgi_server; it moves to "
    "switchboard.testing once bench/ stops importing it from telemetry",
}
"""Edges left out of the cycle check, each with the reason and what removes it."""


def _modules(root: Path) -> Iterator[tuple[str, bool, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), is_package, ast.parse(path.read_text(), str(path))


def imports(module: str, is_package: bool, tree: ast.Module) -> Iterator[str]:
    """Every module ``module`` imports, anywhere in it (functions and ``TYPE_CHECKING`` blocks too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                yield node.module or ""
                continue
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            if node.module:
                yield ".".join([*base, node.module])
            else:
                yield from (".".join([*base, alias.name]) for alias in node.names)


def _package(module: str) -> str:
    """``switchboard.state.retry`` -> ``state``; top-level modules (``switchboard.cli``) are their own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "switchboard"


def package_graph(root: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, is_package, tree in _modules(root):
        if module == "switchboard":
            continue
        source = _package(module)
        for target in imports(module, is_package, tree):
            if target.startswith("switchboard."):
                dest = _package(target)
                known = (
                    dest in graph
                    or (root / "switchboard" / dest).exists()
                    or (root / "switchboard" / f"{dest}.py").exists()
                )
                if dest != source and known:
                    graph.setdefault(source, set()).add(dest)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_library_never_imports_a_service() -> None:
    offenders = [
        f"{module} imports {target}"
        for module, is_package, tree in _modules(LIBS)
        for target in imports(module, is_package, tree)
        if target.split(".")[0] in SERVICES
    ]
    assert offenders == []


def test_the_conductor_is_the_edge_s_own() -> None:
    """Only the edge runs the conductor: it lives in the edge's package, and no other service imports it."""
    assert (ROOT / "services" / "edge" / "switchboard_edge" / "orchestration" / "conductor.py").exists()
    assert not (LIBS / "switchboard" / "orchestration").exists()
    offenders = [
        f"{module} imports {target}"
        for service in ("agent", "supervisor")
        for module, is_package, tree in _modules(ROOT / "services" / service)
        for target in imports(module, is_package, tree)
        if target.startswith("switchboard_edge")
    ]
    assert offenders == []


def test_agents_do_not_import_models() -> None:
    graph = package_graph(LIBS)
    assert "agents" in graph.get("models", set())  # the allowed direction: providers read agents' config
    assert "models" not in graph.get("agents", set())


def test_the_library_packages_have_no_import_cycle() -> None:
    graph = package_graph(LIBS)
    for (source, dest), _why in KNOWN_CYCLE_EDGES.items():
        assert dest in graph.get(source, set()), f"{source} -> {dest} is gone: drop it from KNOWN_CYCLE_EDGES"
        graph[source].discard(dest)
    assert cycles(graph) == []


def test_the_checks_see_cycles_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "switchboard"
    for name, body in {
        "__init__.py": "",
        "agents/__init__.py": "from ..models import base\n",
        "models/__init__.py": "",
        "models/base.py": "from switchboard.agents import x\nimport switchboard_edge\n",
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(body)
    graph = package_graph(tmp_path)
    assert graph == {"agents": {"models"}, "models": {"agents"}}
    assert cycles(graph) == [["agents", "models"]]


BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
}


def test_every_public_error_derives_from_switchboard_error() -> None:
    """One root with a ``retryable`` flag: no public exception class of ours derives from built-in ones
    only (a built-in beside one of ours is fine; private control-flow exceptions, ``_Name``, are exempt)."""
    offenders = [
        f"{module}.{node.name}({', '.join(ast.unparse(b) for b in node.bases)})"
        for root in (LIBS, ROOT / "services" / "edge", ROOT / "services" / "agent", ROOT / "services" / "supervisor")
        for module, _is_package, tree in _modules(root)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
        and node.bases and all(isinstance(b, ast.Name) and b.id in BUILTIN_EXCEPTIONS for b in node.bases)
        and module != "switchboard.errors"
    ]  # fmt: skip
    assert offenders == []
