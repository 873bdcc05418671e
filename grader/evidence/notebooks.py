"""Read Jupyter notebooks as data, and cut a notebook-only submission down to its definitions.

Trusted side.

Nothing here executes notebook code: cells are read as JSON (nbformat) and parsed with ``ast``.
Cell numbers are 1-based positions in the notebook, counting every cell (markdown included),
because that is what a student finds when counting cells from the top.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import reader as nb_reader

MAX_NOTEBOOK_BYTES = 100 * 1024 * 1024  # outputs with images make real notebooks big; beyond this is not a notebook

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class NotebookError(Exception):
    """A file that cannot be read as a notebook; ``str()`` is "NAME: reason" on one line."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.reason = reason


@dataclass
class Cell:
    """One notebook cell as stored in the file."""

    index: int  # 1-based position in the notebook, all cell kinds counted
    kind: str  # 'code', 'markdown' or 'raw'
    source: str
    outputs_text: str = ""  # saved text outputs, ANSI codes stripped
    execution_count: int | None = None


@dataclass
class Notebook:
    """A notebook's cells plus what the execution counts say about the order they ran in."""

    path: str
    cells: list[Cell]
    out_of_order: bool
    order_note: str

    @property
    def code_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.kind == "code"]

    def to_dict(self) -> dict:
        """Summary for reports (the cell sources themselves are left out: they can be megabytes)."""
        code = self.code_cells
        return {
            "path": self.path,
            "cells": len(self.cells),
            "code_cells": len(code),
            "executed_cells": sum(1 for c in code if c.execution_count is not None),
            "out_of_order": self.out_of_order,
            "order_note": self.order_note,
        }


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (tracebacks and some loggers carry them into saved outputs)."""
    return _ANSI.sub("", text)


def _text(value: object) -> str:
    # nbformat joins multi-line strings, but hand-written or old notebooks may still hold lists.
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else ""


def _outputs_text(outputs: object) -> str:
    parts: list[str] = []
    for out in outputs if isinstance(outputs, list) else []:
        if not isinstance(out, dict):
            continue
        kind = out.get("output_type")
        if kind == "stream":
            parts.append(_text(out.get("text")))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data")
            if isinstance(data, dict):
                parts.append(_text(data.get("text/plain")))
        elif kind == "error":
            tb = out.get("traceback")
            if isinstance(tb, list) and tb:
                parts.append("\n".join(_text(t) for t in tb))
            else:
                parts.append(f"{_text(out.get('ename'))}: {_text(out.get('evalue'))}")
    text = "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)
    return strip_ansi(text)


def _order(cells: list[Cell]) -> tuple[bool, str]:
    """Compare execution counts with document order; never-executed cells say nothing about order."""
    ran = [c for c in cells if c.kind == "code" and c.execution_count is not None]
    if not ran:
        return False, "no code cell has been executed (no saved execution counts)"
    problems: list[str] = []
    top = ran[0]  # the earlier cell with the highest count so far
    for cell in ran[1:]:
        assert cell.execution_count is not None and top.execution_count is not None
        if cell.execution_count < top.execution_count:
            problems.append(
                f"cell {cell.index} ran before cell {top.index} "
                f"(execution counts {cell.execution_count} and {top.execution_count})"
            )
        elif cell.execution_count == top.execution_count:
            problems.append(
                f"cells {top.index} and {cell.index} both have execution count {cell.execution_count} "
                "(the kernel was restarted between them)"
            )
        else:
            top = cell
    if not problems:
        first, last = ran[0].execution_count, ran[-1].execution_count
        return False, f"the {len(ran)} executed code cells ran in order (execution counts {first}–{last})"
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return True, "cells ran out of order: " + "; ".join(problems[:3]) + more


def read_notebook(path: Path) -> Notebook:
    """Read an ``.ipynb`` file (any nbformat version) without executing or validating it strictly.

    Raises ``NotebookError`` with a one-line reason for unreadable, truncated or non-notebook files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise NotebookError(path.name, f"{size // (1024 * 1024)} MB is too large to read as a notebook")
        raw = path.read_bytes()
    except OSError as exc:
        raise NotebookError(path.name, f"cannot be read ({exc.strerror or exc})") from None
    return parse_notebook(raw, path)


def parse_notebook(raw: bytes, path: Path) -> Notebook:
    """A notebook from the bytes of its file (``path`` names it); raises ``NotebookError`` like ``read_notebook``."""
    path = Path(path)
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise NotebookError(path.name, f"{len(raw) // (1024 * 1024)} MB is too large to read as a notebook")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotebookError(path.name, "not UTF-8 text") from None
    if not text.strip():
        raise NotebookError(path.name, "the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            path.name, f"not valid JSON (truncated or edited by hand?): {exc.msg} (line {exc.lineno})"
        ) from None
    if not isinstance(data, dict) or not ("cells" in data or "worksheets" in data):
        raise NotebookError(path.name, "JSON without notebook cells, not a notebook")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # reader.reads + convert skips nbformat's schema validation, which logs noise and is slow,
            # while still upgrading v3 notebooks (worksheets) to v4 cells.
            nb = nbformat.convert(nb_reader.reads(text), 4)
        raw_cells = nb.get("cells")
        if not isinstance(raw_cells, list):
            raise NotebookError(path.name, "no list of cells in the notebook")
    except NotebookError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise NotebookError(path.name, f"not a notebook ({type(exc).__name__}: {reason})") from None

    cells: list[Cell] = []
    for i, rc in enumerate(raw_cells, start=1):
        if not isinstance(rc, dict):
            continue
        cell_type = rc.get("cell_type")
        kind = cell_type if isinstance(cell_type, str) and cell_type in ("code", "markdown", "raw") else "raw"
        count = rc.get("execution_count") if kind == "code" else None
        cells.append(
            Cell(
                index=i,
                kind=kind,
                source=_text(rc.get("source")),
                outputs_text=_outputs_text(rc.get("outputs")) if kind == "code" else "",
                execution_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
            )
        )
    out_of_order, note = _order(cells)
    return Notebook(path=str(path), cells=cells, out_of_order=out_of_order, order_note=note)


# ---------------------------------------------------------------------------------------------
# definitions module
# ---------------------------------------------------------------------------------------------


@dataclass
class DefinitionsModule:
    """Python source holding a notebook's definitions, ready for the probe to import."""

    source: str
    line_map: dict[int, tuple[int, int]] = field(default_factory=dict)  # module line -> (cell, line in cell)
    skipped: list[str] = field(default_factory=list)  # one line per thing left out, with the reason
    defined: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (cell, line) of the kept definition


# Cell magics whose body is Python; the magic line itself is dropped.
_PY_CELL_MAGICS = {"capture", "time", "timeit", "prun", "debug", "memit", "skip"}
_DROPPED_MODULES = ("google.colab",)
_MODEL_BASES = ("Module",)  # nn.Module, torch.nn.Module, Module
_DATA_BASES = ("Dataset", "DataLoader", "IterableDataset", "LightningDataModule")
_SAFE_BUILTINS = {
    "tuple",
    "list",
    "dict",
    "set",
    "frozenset",
    "int",
    "float",
    "str",
    "bool",
    "round",
    "range",
    "len",
    "min",
    "max",
    "sum",
    "abs",
    "zip",
    "sorted",
    "reversed",
    "enumerate",
    "map",
    "isinstance",
    "hasattr",
    "getattr",
    "slice",
}
# Full dotted call targets that are definitions: transform/layer constructors and plain maths.
_SAFE_CALL_PREFIXES = ("albumentations", "torchvision.transforms", "torch.nn", "numpy", "math")
_SAFE_CALLS = {"torch.device", "torch.tensor", "torch.cuda.is_available", "torch.backends.mps.is_available"}
_UNSAFE_CALL_WORDS = ("load", "save", "open", "download", "fromfile", "memmap", "genfromtxt", "seed")
_DEFAULT_ALIASES = {
    "A": "albumentations",
    "T": "torchvision.transforms",
    "transforms": "torchvision.transforms",
    "nn": "torch.nn",
    "F": "torch.nn.functional",
    "np": "numpy",
    "math": "math",
    "torch": "torch",
}
_TRANSFORM_WORDS = ("transform", "aug", "tfm")


def _ipython_to_python(source: str) -> tuple[str | None, str, str | None]:
    """Turn a cell's IPython text into Python with the same line numbers.

    Returns (python source or None when the whole cell is not Python, note, %%writefile module name).
    Magic and shell lines become ``pass`` at their own indentation so blocks stay valid.
    """
    lines = source.split("\n")
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    note, module = "", None
    if first is not None and lines[first].lstrip().startswith("%%"):
        words = lines[first].strip()[2:].split()
        magic = words[0] if words else ""
        if magic in ("writefile", "file"):
            target = words[-1] if len(words) > 1 else ""
            if not target.endswith(".py"):
                return None, f"%%{magic} {target} cell (not Python)", None
            module = Path(target).stem
            note = f"%%{magic} {target}: its body is used as notebook code"
        elif magic not in _PY_CELL_MAGICS:
            return None, f"%%{magic} cell (not Python)", None
        lines[first] = ""
    try:
        ast.parse("\n".join(lines))
        return "\n".join(lines), note, module
    except SyntaxError:
        pass
    assign_magic = re.compile(r"^[\w\s,.\[\]()]+=\s*[!%]")
    help_line = re.compile(r"^(\?{1,2}[\w.]+|[\w.]+\?{1,2})\s*$")
    removed = []
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if (
            (stripped.startswith(("%", "!")) and not stripped.startswith("!="))
            or assign_magic.match(stripped)
            or help_line.match(stripped)
        ):
            lines[i] = line[: len(line) - len(stripped)] + "pass"
            removed.append(f"{stripped.split()[0] if stripped.split() else stripped} (line {i + 1})")
    if removed:
        note = "; ".join(filter(None, [note, "IPython lines left out: " + ", ".join(removed)]))
    return "\n".join(lines), note, module


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


class _Filter:
    """Decides statement by statement what goes into the definitions module."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = dict(_DEFAULT_ALIASES)
        self.model_classes: set[str] = set()
        self.data_classes: set[str] = set()
        self.other_classes: set[str] = set()
        self.functions: set[str] = set()
        self.dropped_names: dict[str, str] = {}  # name -> where its dropped definition is
        self.written_modules: set[str] = set()

    def resolve(self, dotted: str) -> str:
        """Full dotted name through the notebook's import aliases (``A.Compose`` -> ``albumentations.Compose``)."""
        root, _, rest = dotted.partition(".")
        return self.aliases.get(root, root) + ("." + rest if rest else "")

    # -- expressions --------------------------------------------------------------------------
    def call_ok(self, call: ast.Call, target_names: list[str]) -> str | None:
        """None when the call is a definition, else the reason it is not."""
        name = _dotted(call.func)
        if name is None:  # Net().to(device): the inner call says more than "a computed value"
            inner = next((n for n in ast.walk(call.func) if isinstance(n, ast.Call)), None)
            return (self.call_ok(inner, target_names) if inner else None) or "a call on a computed value"
        root, _, rest = name.partition(".")
        if root in self.model_classes:
            return f"instantiates the model class {root}"
        if root in self.data_classes:
            return f"builds the dataset {root}"
        if root in self.other_classes or root in self.functions:
            # Notebook code can do anything when called; only transform builders are worth the risk.
            words = [name.lower(), *(t.lower() for t in target_names)]
            if any(w in x for x in words for w in _TRANSFORM_WORDS):
                return None
            return f"calls the notebook {'class' if root in self.other_classes else 'function'} {name}()"
        if not rest and root in _SAFE_BUILTINS:
            return None
        full = self.resolve(name)
        if "DataLoader" in full or "datasets" in full.split(".") or any(w in full.lower() for w in _UNSAFE_CALL_WORDS):
            return f"calls {name}()"
        if full in _SAFE_CALLS or full.startswith(_SAFE_CALL_PREFIXES):
            return None
        return f"calls {name}()"

    def expr_ok(self, node: ast.expr, target_names: list[str]) -> str | None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                why = self.call_ok(sub, target_names)
                if why:
                    return why
            elif isinstance(sub, ast.Await | ast.Yield | ast.YieldFrom | ast.NamedExpr):
                return "not a plain value"
        for name in _free_names(node):
            if name in self.dropped_names:
                return f"uses {name}, which was left out ({self.dropped_names[name]})"
        return None

    # -- statements ---------------------------------------------------------------------------
    def stmt(self, node: ast.stmt) -> str | None:
        """None when ``node`` is kept (and record what it defines), else a short reason."""
        if isinstance(node, ast.Import | ast.ImportFrom):
            mod = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            names = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) and (mod.startswith(_DROPPED_MODULES) or (mod == "google")):
                return f"from {mod} import {', '.join(names)} (Colab only)"
            if isinstance(node, ast.Import) and any(n.startswith(_DROPPED_MODULES) for n in names):
                return "import google.colab (Colab only)"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and mod in self.written_modules:
                return f"from {mod} import: {mod}.py is written by a %%writefile cell whose code is kept here"
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                full = f"{mod}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
                self.aliases[bound] = full if alias.asname or isinstance(node, ast.ImportFrom) else bound
                self.dropped_names.pop(bound, None)
            return None
        if isinstance(node, ast.ClassDef):
            bases = [self.resolve(_dotted(b) or "") for b in node.bases]
            tails = [b.rsplit(".", 1)[-1] for b in bases]
            if any(t in _MODEL_BASES or t in self.model_classes for t in tails):
                self.model_classes.add(node.name)
            elif any(
                t.endswith(_DATA_BASES) or t in self.data_classes or "datasets" in b.split(".")
                for t, b in zip(tails, bases, strict=True)
            ):
                # e.g. class Cifar10(datasets.CIFAR10): instantiating it downloads data
                self.data_classes.add(node.name)
            else:
                self.other_classes.add(node.name)
            self.dropped_names.pop(node.name, None)
            return None
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.functions.add(node.name)
            self.dropped_names.pop(node.name, None)
            return None
        if isinstance(node, ast.Pass):
            return None
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            if (
                isinstance(node, ast.AugAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id in self.dropped_names
            ):
                return f"updates {node.target.id}, which was left out ({self.dropped_names[node.target.id]})"
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            why = None
            if node.value is not None:
                why = self.expr_ok(node.value, names)
            for t in targets:  # a subscript/attribute target needs its base kept, e.g. cfg["lr"] = 0.1
                if why is None and not isinstance(t, ast.Name):
                    why = self.expr_ok(t, names) if not isinstance(t, ast.Tuple | ast.List) else None
            return why
        if isinstance(node, ast.If):
            if _is_main_guard(node):
                return 'if __name__ == "__main__" block'
            why = self.expr_ok(node.test, [])
            return why or self._block_ok(node.body + node.orelse, "if block")
        if isinstance(node, ast.Try):
            handlers = [s for h in node.handlers for s in h.body]
            return self._block_ok(node.body + handlers + node.orelse + node.finalbody, "try block")

        if isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Constant):
                return ""  # a bare string or number: nothing to keep, nothing to report
            if isinstance(node.value, ast.Call):
                return f"call {_dotted(node.value.func) or 'expression'}()"
            return "expression"
        kinds = {
            ast.For: "for loop",
            ast.AsyncFor: "for loop",
            ast.While: "while loop",
            ast.With: "with block",
            ast.AsyncWith: "with block",
        }
        return kinds.get(type(node), type(node).__name__.lower() + " statement")

    def _block_ok(self, body: list[ast.stmt], what: str) -> str | None:
        # What a block defines counts only if the whole block is kept: snapshot and roll back.
        saved = {k: (v.copy() if isinstance(v, dict | set) else v) for k, v in vars(self).items()}
        for sub in body:
            why = self.stmt(sub)
            if why:
                vars(self).update(saved)
                return f"{what} containing {why}"
        return None

    def note_dropped(self, node: ast.stmt, where: str) -> None:
        for name in _bound_names(node):
            self.dropped_names[name] = where


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None)
    return decorators[0].lineno if decorators else node.lineno


def _is_main_guard(node: ast.If) -> bool:
    t = node.test
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in t.comparators)
    )


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
        targets = [node.target]
    elif isinstance(node, ast.With | ast.AsyncWith):
        targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
    elif isinstance(node, ast.If | ast.Try | ast.While):
        inner = [s for f in ("body", "orelse", "finalbody") for s in getattr(node, f, [])]
        inner += [s for h in getattr(node, "handlers", []) for s in h.body]
        return [n for s in inner for n in _bound_names(s)]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


def _free_names(node: ast.expr) -> set[str]:
    """Names an expression reads, minus those bound inside it (lambda arguments, comprehension targets)."""
    loads = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    bound: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Lambda):
            bound |= {a.arg for a in [*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs]}
        elif isinstance(n, ast.comprehension):
            bound |= {t.id for t in ast.walk(n.target) if isinstance(t, ast.Name)}
    return loads - bound


def definitions_module(nb: Notebook) -> DefinitionsModule:
    """Collect a notebook's definitions into one importable module, running none of its top-level work.

    The rule, applied to code cells in notebook order (so a later definition of a name wins, as when
    the notebook is run top to bottom):

    - IPython syntax is removed first: ``%line`` magics, ``!shell`` lines, ``x = !cmd`` and ``obj?`` become
      ``pass``; ``%%capture``/``%%time``-style cell magics lose their first line; ``%%writefile x.py``
      cells are used as code (and ``from x import ...`` of such a module is left out); other cell
      magics (``%%bash``, ``%%html``, ...) skip the cell. A cell that still does not parse is skipped.
    - Kept: imports (except ``google.colab``), ``class`` and ``def`` statements, assignments whose value
      is a definition (literals, names, arithmetic, containers, comprehensions, lambdas, and calls to
      albumentations / torchvision.transforms / torch.nn / numpy / math constructors, ``torch.device``,
      safe builtins, and notebook classes (not models, not datasets) or functions when their name or
      the assigned name says transform/aug), and ``if``/``try`` blocks made only of such statements.
    - Left out: ``if __name__ == "__main__"``, loops, ``with`` blocks, top-level calls (``train()``,
      ``drive.mount()``, ``plt.show()``), model or dataset instantiation, DataLoaders, file loading,
      and any assignment that reads a name whose own definition was left out.
    """
    filt = _Filter()
    out: list[str] = ["# Definitions collected from a notebook by grader.evidence; top-level work is left out."]
    line_map: dict[int, tuple[int, int]] = {}
    future: list[str] = []
    skipped: list[str] = []
    defined: dict[str, tuple[int, int]] = {}
    for cell in nb.code_cells:
        code, note, module = _ipython_to_python(cell.source)
        if note and code is None:
            skipped.append(f"cell {cell.index}: skipped, {note}")
            continue
        if note:
            skipped.append(f"cell {cell.index}: {note}")
        assert code is not None
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            skipped.append(f"cell {cell.index}: skipped, syntax error at line {exc.lineno}: {exc.msg}")
            continue
        if module:
            filt.written_modules.add(module)
        lines = code.split("\n")
        spans = [(_first_line(s), s.end_lineno or s.lineno) for s in tree.body]
        dropped: list[str] = []
        header_done = False
        for pos, (stmt, (start, end)) in enumerate(zip(tree.body, spans, strict=True)):
            why = filt.stmt(stmt)
            if why is not None:
                filt.note_dropped(stmt, f"cell {cell.index} line {stmt.lineno}")
                if why:
                    dropped.append(f"{why} (line {stmt.lineno})")
                continue
            if isinstance(stmt, ast.Pass):  # what is left of a removed magic line
                continue
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                future.append(ast.unparse(stmt))
                continue
            bound = _bound_names(stmt) or [a.asname or a.name.split(".")[0] for a in getattr(stmt, "names", [])]
            for name in bound:
                redefines = name in defined and defined[name][0] != cell.index
                if redefines and isinstance(stmt, ast.ClassDef | ast.FunctionDef):
                    skipped.append(
                        f"cell {cell.index}: {name} redefines cell {defined[name][0]}'s; the later one is used"
                    )
                defined[name] = (cell.index, start)
            if not header_done:
                out.append(f"# --- cell {cell.index} ---")
                header_done = True
            elif isinstance(stmt, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                out.append("")
            shares_line = stmt.col_offset != 0 or any(
                s0 <= end and e0 >= start for i, (s0, e0) in enumerate(spans) if i != pos
            )
            if shares_line:  # `import os; import sys` on one line: emit each statement on its own
                for text_line in ast.unparse(stmt).split("\n"):
                    out.append(text_line)
                    line_map[len(out)] = (cell.index, stmt.lineno)
            else:
                for offset, text_line in enumerate(lines[start - 1 : end]):
                    out.append(text_line)
                    line_map[len(out)] = (cell.index, start + offset)
        if dropped:
            skipped.append(f"cell {cell.index}: left out " + "; ".join(dropped))
    if future:  # __future__ imports must come first
        out = future + out
        line_map = {k + len(future): v for k, v in line_map.items()}
    source = "\n".join(out) + "\n"
    try:
        compile(source, "<notebook definitions>", "exec")
    except SyntaxError as exc:  # should not happen; say so rather than hand the probe a broken module
        skipped.append(f"the collected definitions do not compile ({exc.msg} at line {exc.lineno}); nothing kept")
        source, line_map, defined = "", {}, {}
    return DefinitionsModule(source=source, line_map=line_map, skipped=skipped, defined=defined)
