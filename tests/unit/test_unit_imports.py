"""The import graph of grader/, read with ``ast``: no circle, and no private name imported across modules.

Imports inside functions count too (a lazy import is still a dependency); the one exception is an
entry point a forked process runs, recorded below with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

GRADER = Path(__file__).resolve().parents[2] / "grader"

# (importer, imported): why the edge is not a dependency of the importer's code on the other module.
ENTRY_POINTS = {
    (
        "grader.batch.forkrun",
        "grader.cli",
    ): "a forked grading process runs the `grade` command itself, as a new program would",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(GRADER.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in GRADER.rglob("*.py") if "__pycache__" not in p.parts}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:``: imports for annotations only, never run."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            found |= {id(n) for child in node.body for n in ast.walk(child)}
    return found


def import_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's grader.* imports (a module, or the package whose name it imports)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        out: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("grader"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out.add(full if full in modules else str(node.module))
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("grader.")}
        edges[name] = {m for m in out if m in modules and m != name and (name, m) not in ENTRY_POINTS}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle() -> None:
    found = circles(import_edges(_modules()))
    assert found == [], f"modules that import each other (directly or through others): {found}"


def test_the_circle_finder_finds_a_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_every_entry_point_exception_is_still_an_import() -> None:
    modules = _modules()
    for importer, imported in ENTRY_POINTS:
        text = modules[importer].read_text()
        assert f"from {imported} import" in text or f"import {imported}" in text, (importer, imported)


def test_no_private_name_is_imported_from_another_module() -> None:
    problems = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("grader"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    problems.append(f"{name} imports {', '.join(private)} from {node.module}")
    assert problems == []
