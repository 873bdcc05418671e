"""The value of an expression in a student's source, found without running anything (trusted side).

``model = Model1(number_of_classes)`` with ``number_of_classes = 10`` on the line above, a config
dict, an ``argparse`` default: discovery needs these values to build the model and the pipeline the
way the student's own code does. ``SourceValues(tree)`` reads one module; ``value(node)`` resolves
literals, names assigned in the enclosing function (before the node) or at module level, subscripts
of resolved dicts/lists, ``args.NAME`` through ``add_argument(..., default=...)``, and ``len(...)``.
Anything else raises ``Unresolved``.
"""

from __future__ import annotations

import ast
import re
from typing import Any


class Unresolved(Exception):
    """The expression's value cannot be known without running the code."""


class SourceValues:
    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        self.module_assigns = _assigns(tree.body)
        self.argparse = _argparse_defaults(tree)

    def value(self, node: ast.AST, depth: int = 0) -> Any:
        """The value of ``node``; raises Unresolved."""
        if depth > 8:
            raise Unresolved("too deep")
        try:
            return ast.literal_eval(node)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
        if isinstance(node, ast.Name):
            return self.value(self._assignment(node), depth + 1)
        if isinstance(node, ast.Attribute) and node.attr in self.argparse:
            return self.argparse[node.attr]
        if isinstance(node, ast.Subscript):
            container = self.value(node.value, depth + 1)
            key = self.value(node.slice, depth + 1)
            try:
                return container[key]
            except (KeyError, IndexError, TypeError) as exc:
                raise Unresolved(ast.unparse(node)) from exc
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self.value(e, depth + 1) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict) and None not in node.keys:
            keys = [k for k in node.keys if k is not None]  # all of them: no ``**spread``
            return {self.value(k, depth + 1): self.value(v, depth + 1) for k, v in zip(keys, node.values, strict=True)}
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "len"
            and len(node.args) == 1
        ):
            try:
                return len(self.value(node.args[0], depth + 1))
            except TypeError as exc:
                raise Unresolved(ast.unparse(node)) from exc
        raise Unresolved(ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__)

    def _assignment(self, name: ast.Name) -> ast.AST:
        """The expression last assigned to ``name`` before it is read: in its function, else the module."""
        line = getattr(name, "lineno", 10**9)
        node: ast.AST | None = self.parents.get(id(name))
        while node is not None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local = _assigns(node.body, before=line)
                if name.id in local:
                    return local[name.id]
                break
            node = self.parents.get(id(node))
        if name.id in self.module_assigns:
            return self.module_assigns[name.id]
        raise Unresolved(name.id)


def _assigns(body: list[ast.stmt], before: int | None = None) -> dict[str, ast.AST]:
    """name -> the value of its last simple assignment in ``body`` (and in its if/with/for blocks)."""
    out: dict[str, ast.AST] = {}
    for stmt in body:
        if before is not None and stmt.lineno >= before:
            break
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            out[stmt.target.id] = stmt.value
        elif isinstance(stmt, (ast.If, ast.With, ast.For, ast.Try)):
            inner = [s for block in ("body", "orelse", "finalbody") for s in getattr(stmt, block, [])]
            out.update(_assigns(inner, before))
    return out


def _argparse_defaults(tree: ast.Module) -> dict[str, Any]:
    """dest -> default of every ``add_argument("--name", default=...)`` in the module."""
    out: dict[str, Any] = {}
    for call in ast.walk(tree):
        if not (
            isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument"
        ):
            continue
        flags = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        keywords = {k.arg: k.value for k in call.keywords if k.arg}
        dest = keywords.get("dest")
        if isinstance(dest, ast.Constant) and isinstance(dest.value, str):
            name = dest.value
        else:
            long = [f for f in flags if f.startswith("--")] or flags
            if not long:
                continue
            name = long[0].lstrip("-").replace("-", "_")
        if "default" in keywords:
            try:
                out[name] = ast.literal_eval(keywords["default"])
            except (ValueError, SyntaxError, TypeError):
                continue
    return out


CLASS_COUNT_NAMES = re.compile(
    r"(num|n|number|no)_?of_?classes|n?classes|num_?class|n_?out(puts)?|num_?outputs|out_?classes", re.I
)


def suggestions(cls: ast.ClassDef, param: str, num_classes: int) -> list[tuple[Any, str]]:
    """(value, why) to try for a required constructor parameter that no call site gives a value.

    In order: the rubric's class count for class-count names; the string literals the class compares
    the parameter against (directly, or through the attribute it is stored in); the choices its
    annotation lists (``"BN/LN/GN"``, ``Literal[...]``); a size or channel count its name suggests;
    then None.
    """
    out: list[tuple[Any, str]] = []
    if CLASS_COUNT_NAMES.fullmatch(param):
        out.append((num_classes, "the rubric's num_classes"))
    aliases = {param} | _stored_as(cls, param)
    for value, line in _compared_strings(cls, aliases):
        out.append((value, f"compared at line {line}"))
    init = next((b for b in cls.body if isinstance(b, ast.FunctionDef) and b.name == "__init__"), None)
    arg = next((a for a in init.args.args + init.args.kwonlyargs if a.arg == param), None) if init else None
    if arg is not None and arg.annotation is not None:
        for value in _annotation_choices(arg.annotation):
            out.append((value, f"listed in its annotation at line {arg.lineno}"))
    lowered = param.lower()
    if "channel" in lowered and ("in" in lowered or lowered == "channels"):
        out.append((3, "an RGB image has 3 channels"))
    elif lowered in ("img_size", "image_size", "input_size", "size", "resolution"):
        out.append((32, "CIFAR-10 images are 32x32"))
    elif "drop" in lowered:
        out.append((0.0, "no dropout"))
    out.append((None, "no value suggested by the code"))
    seen, unique = set(), []
    for value, why in out:
        key = repr(value)
        if key not in seen:
            seen.add(key)
            unique.append((value, why))
    return unique


def _stored_as(cls: ast.ClassDef, param: str) -> set[str]:
    """``self.X = param`` in the class: X is compared later instead of the parameter."""
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id == param:
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    names.add(target.attr)
    return names


def _compared_strings(cls: ast.ClassDef, names: set[str]) -> list[tuple[str, int]]:
    """String literals that ``names`` (a parameter, or self.<attribute>) are compared with."""

    def named(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in names
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return node.attr in names
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("lower", "upper", "strip")
        ):
            return named(node.func.value)
        return False

    found: list[tuple[str, int]] = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(named(s) for s in sides):
                for side in sides:
                    found += [(v, node.lineno) for v in _strings(side)]
        elif isinstance(node, ast.Match) and named(node.subject):
            for case in node.cases:
                if isinstance(case.pattern, ast.MatchValue):
                    found += [(v, case.pattern.lineno) for v in _strings(case.pattern.value)]
    return found


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _annotation_choices(annotation: ast.AST) -> list[str]:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        parts = [p.strip().strip("'\"") for p in re.split(r"[/|,]", annotation.value)]
        return [p for p in parts if p and re.fullmatch(r"[\w-]+", p)] if len(parts) > 1 else []
    if isinstance(annotation, ast.Subscript) and _dotted_name(annotation.value).endswith("Literal"):
        inner = annotation.slice
        return _strings(inner) or _strings(ast.Tuple(elts=[inner]))
    return []


def _dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted_name(node.value)}.{node.attr}"
    return ""


DATASET_MEAN = (0.4914, 0.4822, 0.4465)
DATASET_STD = (0.2470, 0.2435, 0.2616)


def guess_value(name: str) -> tuple[Any, str] | None:
    """A value for a pipeline parameter or name the code does not give, by what its name says."""
    n = name.lower()
    if "mean" in n:
        return DATASET_MEAN, "the CIFAR-10 mean (0-1 units)"
    if "std" in n:
        return DATASET_STD, "the CIFAR-10 std (0-1 units)"
    if n in (
        "img_size",
        "image_size",
        "input_size",
        "size",
        "height",
        "width",
        "img_height",
        "img_width",
        "resolution",
        "crop_size",
    ):
        return 32, "CIFAR-10 images are 32x32"
    if "train" in n:
        return True, "the train pipeline is the one graded"
    if n in ("p", "prob", "probability"):
        return 0.5, "a probability"
    return None
