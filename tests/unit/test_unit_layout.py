"""The package's layout rules, read from the source with ``ast`` (nothing of grader/ is imported to check them).

- every module's docstring says which side it runs on, and the side it names is the side it is on;
- the sandboxed child (grader/child/) imports nothing of the trusted side.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

GRADER = Path(__file__).resolve().parents[2] / "grader"
ROOT = GRADER.parent

TRUSTED = re.compile(r"(?<!un)trusted side", re.IGNORECASE)
UNTRUSTED = re.compile(r"untrusted side \(runs inside the sandbox next to the student's code\)", re.IGNORECASE)
SHARED = re.compile(r"shared by both sides", re.IGNORECASE)

# The modules outside grader/child/ that the sandboxed child may import, and why each may.
SHARED_MODULES = {
    "grader/__init__.py": "every import of grader.* runs it; it imports nothing at module level",
    "grader/boundary.py": "the inert files that cross: the child writes them, the trusted side reads them",
    "grader/landlock.py": "child/enter.py restricts the child with it; the trusted launcher asks its ABI",
    "grader/failures.py": "the typed failures the probe records",
    "grader/augment_inspect.py": "describes and measures the student's pipeline in the probe, the rebuilt one on the trusted side",
}
# Modules whose text this project does not edit: the recipe is kept readable top to bottom, so its side is
# recorded here (and in SHARED_MODULES) rather than in its docstring.
SIDE_RECORDED_HERE = {"grader/training/recipe.py": "trusted"}


def _modules() -> list[Path]:
    return sorted(p for p in GRADER.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _expected_side(rel: str) -> str:
    if rel.startswith("grader/child/"):
        return "untrusted"
    return "shared" if rel in SHARED_MODULES else "trusted"


def side_problems(rel: str, docstring: str | None) -> list[str]:
    """What is wrong with one module's docstring: missing, names no side, or names another side than its own."""
    if not docstring:
        return [f"{rel}: no module docstring"]
    named = {
        "trusted": bool(TRUSTED.search(docstring)),
        "untrusted": bool(UNTRUSTED.search(docstring)),
        "shared": bool(SHARED.search(docstring)),
    }
    if not any(named.values()):
        return [
            f"{rel}: the docstring names no side ('trusted side', 'untrusted side (runs inside ...)', 'shared by both sides')"
        ]
    want = _expected_side(rel)
    if not named[want]:
        return [f"{rel}: is on the {want} side, but its docstring does not say so"]
    return []


def test_every_module_says_its_side() -> None:
    problems: list[str] = []
    for path in _modules():
        rel = _rel(path)
        if rel in SIDE_RECORDED_HERE:
            assert _expected_side(rel) == SIDE_RECORDED_HERE[rel]
            continue
        problems += side_problems(rel, ast.get_docstring(ast.parse(path.read_text())))
    assert not problems, "\n".join(problems)
    assert len(_modules()) > 60  # the walk does see the package


def test_side_rule_catches_a_missing_or_wrong_side() -> None:
    assert side_problems("grader/x.py", None)
    assert side_problems("grader/x.py", "Does something.")
    assert side_problems("grader/child/x.py", "Reads what the trusted side wrote.")  # mentions a side, not its own
    assert side_problems("grader/boundary.py", "Trusted side.")
    assert not side_problems("grader/x.py", "Trusted side.")
    assert not side_problems(
        "grader/child/x.py", "Untrusted side (runs inside the sandbox next to the student's code)."
    )


def _module_of(rel: str) -> str:
    name = rel[: -len(".py")].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _file_of(module: str) -> str | None:
    base = ROOT / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return _rel(path)
    return None


def grader_imports(path: Path, module_level_only: bool = False) -> set[str]:
    """The grader/ files a module imports (function-level imports too, unless ``module_level_only``),
    each with the packages it passes through (``grader.training.recipe`` runs ``grader/training/__init__.py``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    package = _module_of(_rel(path))
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # from grader.training import recipe
    files: set[str] = set()
    for name in names:
        if name != "grader" and not name.startswith("grader."):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            found = _file_of(".".join(parts[:i]))
            if found:
                files.add(found)
    return files


def _allowed_in_child(rel: str) -> bool:
    return rel.startswith("grader/child/") or rel in SHARED_MODULES


def child_import_problems() -> list[str]:
    problems = []
    # The child's own modules: every import, at any level.
    scanned = [(_rel(p), grader_imports(p)) for p in sorted((GRADER / "child").rglob("*.py"))]
    # The shared modules must not pull the trusted side in behind them. grader/__init__.py imports the
    # notebook integration inside grade(), which a child never calls: only its module level counts.
    for rel in SHARED_MODULES:
        scanned.append((rel, grader_imports(ROOT / rel, module_level_only=rel == "grader/__init__.py")))
    for rel, imported in scanned:
        problems += [f"{rel} imports the trusted-only {dep}" for dep in sorted(imported) if not _allowed_in_child(dep)]
    return problems


def _child_scans() -> list[tuple[str, set[str]]]:
    return [(_rel(p), grader_imports(p)) for p in sorted((GRADER / "child").rglob("*.py"))]


def test_the_child_imports_nothing_trusted_only() -> None:
    assert not child_import_problems(), "\n".join(child_import_problems())
    # The walk sees the real imports (so an empty list above means something).
    probe = grader_imports(GRADER / "child" / "probe.py")
    assert {"grader/boundary.py", "grader/failures.py", "grader/augment_inspect.py"} <= probe
    assert "grader/child/graph_export.py" in probe
    # No training happens in a child any more: nothing there reaches the recipe.
    assert not any(dep.startswith("grader/training/") for _rel_, deps in _child_scans() for dep in deps)
    # The children started by name (grader.child.main) are the child's own modules.
    tree = ast.parse((GRADER / "child" / "__init__.py").read_text())
    children = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CHILDREN" for t in node.targets)
    )
    for value in ast.literal_eval(children).values():
        assert value.startswith("grader.child."), value


def test_every_shared_module_exists() -> None:
    for rel in SHARED_MODULES:
        assert (ROOT / rel).is_file(), rel


def _binds_other_object(func: ast.AST, name: str) -> bool:
    """``name`` is assigned in ``func`` from a call of something other than ``Facts`` (``ReadmeFacts(...)``...)."""
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = node.value
            if isinstance(value, ast.Call) and not (isinstance(value.func, ast.Name) and value.func.id == "Facts"):
                return True
    return False


def _facts_names(func: ast.AST) -> set[str]:
    """The names that hold a Facts in one function: ``facts`` (the checks' fixture and the pipeline's
    variable), parameters annotated ``Facts``, and names assigned ``Facts(...)``."""
    names = {"facts"}
    if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
        for arg in [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]:
            if arg.annotation is not None and ast.unparse(arg.annotation).strip("'\"") == "Facts":
                names.add(arg.arg)
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) == "Facts"
        ):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return {n for n in names if not _binds_other_object(func, n)}


def facts_assignments(tree: ast.Module) -> list[tuple[str, int]]:
    """Every ``<facts>.attr = ...`` (also ``+=``, annotated, ``self.facts.attr``, ``setattr(facts, "attr", ...)``)."""
    found = []
    scopes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))]
    for scope in scopes:
        names = _facts_names(scope)
        body = scope.body if isinstance(scope, ast.Module) else [scope]
        for node in (n for top in body for n in ast.walk(top)):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "setattr" and len(node.args) == 3:
                obj, attr = node.args[0], node.args[1]
                if isinstance(obj, ast.Name) and obj.id in names and isinstance(attr, ast.Constant):
                    found.append((str(attr.value), node.lineno))
            for target in targets:
                for sub in ast.walk(target):
                    if not isinstance(sub, ast.Attribute):
                        continue
                    owner = sub.value
                    if (isinstance(owner, ast.Name) and owner.id in names) or (
                        isinstance(owner, ast.Attribute) and owner.attr == "facts"
                    ):
                        found.append((sub.attr, sub.lineno))
    return sorted(set(found), key=lambda item: item[1])


def undeclared_facts_attributes(fields: set[str]) -> list[str]:
    problems = []
    for root in (GRADER, ROOT / "checks"):
        for path in sorted(root.rglob("*.py")):
            for attr, line in facts_assignments(ast.parse(path.read_text())):
                if attr not in fields:
                    problems.append(f"{_rel(path)}:{line}: facts.{attr} is not a field of grader.facts.Facts")
    return problems


def _facts_fields() -> set[str]:
    import dataclasses

    from grader.facts import Facts

    return {f.name for f in dataclasses.fields(Facts)}


def test_every_facts_attribute_is_a_declared_field() -> None:
    fields = _facts_fields()
    assert not undeclared_facts_attributes(fields), "\n".join(undeclared_facts_attributes(fields))
    # The scan sees the real assignments (grader/facts_from_probe.py sets most of them).
    seen = {attr for attr, _ in facts_assignments(ast.parse((GRADER / "facts_from_probe.py").read_text()))}
    assert {"sandbox", "summary_text", "aug_inputs", "augmented_grid_png", "mean", "std", "aug_failure"} <= seen
    seen_job = {attr for attr, _ in facts_assignments(ast.parse((GRADER / "training" / "job.py").read_text()))}
    assert {"training_skipped", "mean", "std"} <= seen_job
    # ...and an attribute added at run time is caught.
    stray = ast.parse("def f(facts):\n    facts.shiny = 1\n\ndef g(x: Facts):\n    setattr(x, 'other', 2)\n")
    assert [a for a, _ in facts_assignments(stray) if a not in fields] == ["shiny", "other"]
    other = ast.parse("def h(root):\n    facts = ReadmeFacts(path=root)\n    facts.parts = {}\n")
    assert facts_assignments(other) == []  # another object that happens to be called facts


def test_no_getattr_default_on_facts() -> None:
    """A field has its default in the dataclass; ``getattr(facts, "x", default)`` would hide a missing one."""
    problems = []
    for root in (GRADER, ROOT / "checks"):
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "hasattr") and node.args:
                    first = ast.unparse(node.args[0])
                    if (first == "facts" or first.endswith(".facts")) and isinstance(node.args[1], ast.Constant):
                        problems.append(f"{_rel(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not problems, "\n".join(problems)
