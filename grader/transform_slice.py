"""The train pipeline cut out of its module: only what its ``A.Compose(...)`` needs (trusted side).

A pipeline at the top of a training script would otherwise be built by running the whole script
(which may crash on something unrelated, or train for fifty epochs). ``pipeline_slice`` keeps the
statement that defines the pipeline (an assignment, a function, a class), the imports and module
statements that define the names it uses (recursively), and nothing else. Line numbers are kept
(the other lines are left blank), so an error in the slice points at the student's own line.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from typing import Any

BUILTINS = set(dir(builtins))


def defined_names(stmt: ast.stmt) -> set[str]:
    """Names a module-level statement binds."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"}
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    names = set()
    targets: list[ast.expr | None] = (
        [*stmt.targets] if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
    )
    for target in targets:
        if target is None:
            continue
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)
    if isinstance(stmt, (ast.If, ast.With, ast.Try, ast.For)):
        for inner in ast.iter_child_nodes(stmt):
            if isinstance(inner, ast.stmt):
                names |= defined_names(inner)
    return names


def free_names(stmt: ast.stmt) -> set[str]:
    """Names a statement reads that it does not bind itself (an over-approximation is harmless)."""
    loaded: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not stmt:
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        bound.discard(stmt.name)
    return loaded - bound - BUILTINS


def pipeline_slice(
    text: str, tree: ast.Module, line: int, guess: Callable[[str], tuple[Any, str] | None] | None = None
) -> tuple[str, list[str]] | None:
    """Source of the module with only the statement holding line ``line`` and what it needs, and the
    values assumed for names it needs that nothing before it defines (``guess``: mean, std, size...).

    None when no module-level statement holds that line.
    """
    body = tree.body
    target = next((s for s in body if s.lineno <= line <= (s.end_lineno or s.lineno)), None)
    if target is None:
        return None
    keep = {id(target)}
    wanted = free_names(target)
    before = [s for s in body if s.lineno < target.lineno]
    for _ in range(10):  # names needed by what was kept, a few levels deep
        added = False
        for stmt in reversed(before):
            if id(stmt) in keep:
                continue
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                keep.add(id(stmt))
                continue
            if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
                keep.add(id(stmt))  # its names are unknown: keep it (it runs that module)
                added = True
                continue
            provides = defined_names(stmt) & wanted
            if provides and not is_script_work(stmt):
                keep.add(id(stmt))
                wanted |= free_names(stmt)
                added = True
        if not added:
            break
    lines = text.splitlines()
    out = [""] * len(lines)
    for stmt in body:
        if id(stmt) in keep:
            first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
            for i in range(first - 1, stmt.end_lineno or stmt.lineno):
                out[i] = lines[i]
    provided = set().union(*(defined_names(s) for s in body if id(s) in keep and s is not target))
    assumed, injected = [], []
    for name in sorted(free_names(target) - provided):
        value = guess(name) if guess else None
        if value is not None:
            injected.append(f"{name} = {value[0]!r}")
            assumed.append(f"assumed {name} = {value[0]!r} ({value[1]})")
    if injected:
        free = next((i for i in range(target.lineno - 1) if not out[i].strip()), None)
        if free is None:
            return "\n".join(out) + "\n", []
        out[free] = "; ".join(injected)
    return "\n".join(out) + "\n", assumed


def is_script_work(stmt: ast.stmt) -> bool:
    """A statement that does the program's work (training, plotting, downloads), never kept."""
    if isinstance(stmt, (ast.For, ast.While)):
        return True
    calls = [n for n in ast.walk(stmt) if isinstance(n, ast.Call)]
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
        return False
    heavy = {"fit", "train", "backward", "savefig", "show", "DataLoader", "download", "save", "run"}
    for call in calls:
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else (func.id if isinstance(func, ast.Name) else "")
        if name in heavy:
            return True
    return False
