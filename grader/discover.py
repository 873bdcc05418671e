"""Discovery (trusted side): find the assignment, the model class and the train transforms by reading files.

Nothing of the submission runs here: Python files are parsed with ``ast`` and notebooks read as JSON.
Real submissions are messy (multi-session repos, namespace packages, several models per file, helper
blocks, constructors with arguments, transforms in functions or classes), so every choice is ranked
and explained, and the probe gets a ranked list of candidates to try.

A submission can pin everything in ``grade.toml``::

    [grade]
    model = "src/model.py:Net"
    model_kwargs = { norm = "bn" }
    transforms = "src/data.py:train_transforms"
"""

from __future__ import annotations

import ast
import itertools
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from grader.failures import ErrorKind, Failure
from grader.source_values import SourceValues, Unresolved, guess_value, suggestions
from grader.submission import Submission
from grader.transform_slice import is_script_work, pipeline_slice

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

MAX_PY_BYTES = 2_000_000
MAX_NB_BYTES = 50_000_000
MODEL_FILE_NAMES = {
    "model.py": 3,
    "models.py": 3,
    "network.py": 3,
    "model_builder.py": 3,
    "net.py": 2,
    "networks.py": 2,
}
MODEL_DIRS = {"src", "models", "model", "network", "networks"}
# Words that mark the Session 6 assignment (CIFAR-10 + the required layers and augmentations).
KEYWORDS = {
    r"CIFAR-?10": 3,
    r"CoarseDropout": 4,
    r"dilation\s*=": 3,
    r"groups\s*=": 2,
    r"ShiftScaleRotate": 3,
    r"albumentations": 2,
    r"HorizontalFlip": 1,
    r"AdaptiveAvgPool2d|adaptive_avg_pool2d|GAP": 1,
    r"\bMNIST\b": -4,
}
AUG_NAMES = {"HorizontalFlip", "ShiftScaleRotate", "CoarseDropout", "Affine", "Cutout"}
GENERATED_PREFIX = "_s6_notebook_"  # modules made from notebook cells, in the probe's copy only
RUN_PREFIX = "_s6_run_"  # a notebook's code cells in order, for the capture run (grader/child/capture.py)
SESSION_FOLDER = re.compile(r"^(s|session|assignment|week|lab|hw|a)[\s_-]*0?6$", re.I)
SLICE_PREFIX = "_s6_pipeline_"  # the train pipeline's statement and what it needs, cut from its file


class DiscoveryError(Exception):
    """Discovery could not go on (not a folder, a bad grade.toml); the message says what to do."""


@dataclass
class ModelCandidate:
    file: str  # relative to the submission root (for notebooks: the generated module)
    cls: str
    line: int
    score: float
    reasons: list[str] = field(default_factory=list)
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    required_params: list[str] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)  # values the grader chose, and why (for the report)


@dataclass
class TransformsCandidate:
    file: str
    name: str | None  # attribute path to get or call; None: the Compose created at import in ``file``
    kind: str  # variable | function | class | import
    line: int
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    assumed: list[str] = field(default_factory=list)  # values the grader chose, and why
    slice_file: str | None = None  # the generated module holding only what the pipeline needs
    slice_source: str | None = None
    fallback_ok: bool = False  # the whole module may be imported if the slice does not build


@dataclass
class SourceCall:
    """A call to an augmentation class as written in the source (the spelling the student used)."""

    name: str
    file: str
    line: int
    text: str
    kwargs: dict[str, Any]  # literal values; non-literals as {"expr": "..."}
    positional: int


@dataclass
class EntryPoint:
    """What the capture run executes: a training script (or a ``main``), or a notebook's cells in order."""

    file: str  # what the probe runs, relative to the root (a notebook: its run module)
    shown_as: str  # the student's own file
    kind: str  # script | notebook
    score: float
    reasons: list[str] = field(default_factory=list)
    cells: list[list] = field(default_factory=list)  # notebooks: [first line, last line, magic, arg, cell]
    call_main: bool = False  # a script that defines main() and never calls it


@dataclass
class Discovery:
    root: Path
    assignment_dir: str  # relative; "" for the root
    models: list[ModelCandidate]
    transforms: TransformsCandidate | None
    transform_alternatives: list[TransformsCandidate]
    aug_calls: list[SourceCall]
    py_files: list[str]
    notebooks: list[str]
    notes: list[str]
    problems: list[dict]  # {"type", "message"}: what blocks the probe
    pinned: dict  # from grade.toml / options
    generated: dict[str, str] = field(default_factory=dict)  # file -> source written into the probe's copy
    sys_path: list[str] = field(default_factory=list)
    torchvision_pipeline: str | None = None  # "file:line" of a torchvision train pipeline (not albumentations)
    locations: dict[str, dict] = field(default_factory=dict)  # generated file -> its source (grader/locations.py)
    entries: list[EntryPoint] = field(default_factory=list)  # what the capture run executes, best first
    # The one index of the submission every later stage reads (not part of the report).
    submission: Submission | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(replace(self, submission=None))
        d["root"] = str(self.root)
        d.pop("generated")
        d.pop("submission")
        for entry in d["entries"]:
            entry.pop("cells", None)  # the probe's map of a notebook's cells, not for readers
        return d


@dataclass
class _PyFile:
    rel: str
    text: str
    tree: ast.Module | None
    error: str | None


def discover(
    source: Path | Submission,
    model: str | None = None,
    model_kwargs: dict | None = None,
    transforms: str | None = None,
    num_classes: int = 10,
    transforms_kwargs: dict | None = None,
) -> Discovery:
    """Read the submission (a folder, or its index) and decide what the probe should import and build."""
    if not isinstance(source, Submission):
        if not Path(source).is_dir():
            raise DiscoveryError(f"{source} is not a folder")
        source = Submission.scan(Path(source).resolve())
    sub = source
    root = sub.root
    pinned = _read_grade_toml(sub)
    if model:
        pinned["model"] = model
    if model_kwargs is not None:
        pinned["model_kwargs"] = model_kwargs
    if transforms:
        pinned["transforms"] = transforms
    if transforms_kwargs is not None:
        pinned["transforms_kwargs"] = transforms_kwargs
    files = sub.files(".py", max_bytes=MAX_PY_BYTES)
    notebooks = sub.files(".ipynb", max_bytes=MAX_NB_BYTES)
    notes = list(sub.notes)
    py = {rel: _parse(sub, rel) for rel in files}
    nb_code = {rel: _notebook_code(sub, rel) for rel in notebooks}
    generated, locations = _notebook_modules(sub, notebooks, notes)
    for rel, module_source in generated.items():
        py[rel] = _PyFile(rel, module_source, ast.parse(module_source), None)
    assignment = _assignment_dir(root, py, nb_code)
    if assignment:
        notes.append(f"assignment found in {assignment}/ (by its content: CIFAR-10, CoarseDropout, dilation, groups)")
    problems: list[dict] = []
    disc = Discovery(
        root, assignment, [], None, [], [], sorted(files), sorted(nb_code), notes, problems, pinned, generated
    )
    disc.locations = locations
    disc.submission = sub
    scope = {rel: f for rel, f in py.items() if _under(rel, assignment)}
    nb_scope = {rel: code for rel, code in nb_code.items() if _under(rel, assignment)}
    disc.models = _model_candidates(scope, nb_scope, pinned, problems, notes, num_classes)
    if not disc.models and scope is not py:
        disc.models = _model_candidates(py, nb_code, pinned, problems, notes, num_classes)
    if not disc.models:
        problems.append(
            Failure(
                ErrorKind.MODEL_NOT_FOUND,
                "no nn.Module subclass found in any .py file"
                + (
                    " (notebooks alone are graded from their cells once the notebook reader is available)"
                    if nb_code
                    else ""
                ),
            ).to_dict()
        )
    disc.aug_calls = _aug_calls(scope, nb_scope) or _aug_calls(py, nb_code)
    found = _transform_candidates(scope, pinned) or _transform_candidates(py, pinned)
    for piece, file in [
        ("the model", disc.models[0].file if disc.models else None),
        ("the train pipeline", found[0].file if found else None),
    ]:
        if assignment and file and not _under(file, assignment):
            notes.append(f"warning: {piece} comes from {file}, outside the assignment folder {assignment}/")
    if found:
        disc.transforms, disc.transform_alternatives = found[0], found[1:]
        chosen = disc.transforms
        if chosen.slice_source is not None:
            folder, _, base = chosen.file.rpartition("/")
            chosen.slice_file = (folder + "/" if folder else "") + f"{SLICE_PREFIX}{base}"
            generated[chosen.slice_file] = chosen.slice_source
            disc.locations[chosen.slice_file] = {"source": chosen.file, "lines": None}
            notes.append(
                f"the train pipeline is built from {chosen.file} alone: its A.Compose and what it needs, nothing else of the file runs"
            )
    else:
        notes.append("no albumentations train pipeline found in the .py files")
        tv = _torchvision_pipeline(scope) or _torchvision_pipeline(py)
        if tv:
            disc.torchvision_pipeline = tv
            notes.append(f"{tv} builds a torchvision pipeline, not an albumentations one")
    disc.sys_path = _sys_path_entries(root, py)
    if not ("model" in pinned and "transforms" in pinned):  # both pinned: nothing for the capture to settle
        own = {rel: f for rel, f in scope.items() if rel not in generated}
        disc.entries = _entry_points(sub, own, sorted(nb_scope), generated, disc.locations, notes)
    return disc


# ---- files --------------------------------------------------------------------------------------


def _parse(sub: Submission, rel: str) -> _PyFile:
    try:
        text = sub.source(rel)
    except OSError as exc:
        return _PyFile(rel, "", None, f"{rel}: cannot be read ({exc})")
    try:
        return _PyFile(rel, text, ast.parse(text), None)
    except SyntaxError as exc:
        return _PyFile(rel, text, None, f"{rel}:{exc.lineno}: {exc.msg}")
    except ValueError as exc:  # null bytes
        return _PyFile(rel, text, None, f"{rel}: {exc}")


def _notebook_code(sub: Submission, rel: str) -> str:
    """All code cells of a notebook joined (magics and shell lines commented out); '' if unreadable."""
    from grader.evidence.notebooks import NotebookError

    try:
        cells = sub.notebook(rel).code_cells
    except NotebookError:
        return ""
    out = []
    for cell in cells:
        out.append(
            "\n".join(
                "# " + line if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines()
            )
        )
    return "\n\n".join(out)


def _under(rel: str, folder: str) -> bool:
    return not folder or rel == folder or rel.startswith(folder + "/")


def _read_grade_toml(sub: Submission) -> dict:
    if not sub.has("grade.toml"):
        return {}
    try:
        data = tomllib.loads(sub.read_bytes("grade.toml").decode())
    except OSError as exc:
        raise DiscoveryError(f"grade.toml cannot be read: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DiscoveryError(f"grade.toml is not valid TOML: {exc}") from exc
    section = data.get("grade", data)
    out = {
        k: section[k] for k in ("model", "model_kwargs", "transforms", "transforms_kwargs", "training") if k in section
    }
    out["from_grade_toml"] = True
    return out


def _assignment_dir(root: Path, py: dict[str, _PyFile], nb: dict[str, str]) -> str:
    """The deepest folder holding most of the assignment's signal (multi-session repos)."""
    scores: dict[str, float] = {}
    for rel, text in [(r, f.text) for r, f in py.items()] + list(nb.items()):
        s = sum(w for pattern, w in KEYWORDS.items() if re.search(pattern, text))
        if s <= 0:
            continue
        parts = rel.split("/")[:-1]
        for i in range(len(parts) + 1):
            key = "/".join(parts[:i])
            scores[key] = scores.get(key, 0) + s
    for key in scores:  # a folder named for this session ("S6", "session_06", "Assignment-6")
        if SESSION_FOLDER.search(key.rsplit("/", 1)[-1]):
            scores[key] *= 1.5
    current = ""
    while True:
        total = scores.get(current, 0)
        children = sorted((k for k in scores if _parent(k) == current and k != current), key=lambda k: -scores[k])
        if not children or total <= 0:
            return current
        best = children[0]
        own = total - sum(scores[k] for k in children)  # the folder's own files compete too
        runner_up = max(scores[children[1]] if len(children) > 1 else 0.0, own)
        # Most of the signal, or clearly more than any sibling (another session's folder beside it).
        if scores[best] < 0.75 * total and scores[best] < 1.5 * runner_up:
            return current
        current = best


def _parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def _sys_path_entries(root: Path, py: dict[str, _PyFile]) -> list[str]:
    """Folders to put on sys.path: ones holding top-level scripts, and src/ layouts."""
    entries = {""}
    for rel in py:
        parts = rel.split("/")
        if "src" in parts[:-1]:
            entries.add("/".join(parts[: parts.index("src") + 1]))
    return sorted(entries)


def _is_generated(rel: str) -> bool:
    return rel.rsplit("/", 1)[-1].startswith(GENERATED_PREFIX)


def _notebook_modules(
    sub: Submission, notebooks: list[str], notes: list[str]
) -> tuple[dict[str, str], dict[str, dict]]:
    """A module of each notebook's definitions (imports, classes, functions, constants), written next
    to the notebook in the probe's copy; its training cells, magics and Drive mounts are left out."""
    from grader.evidence.notebooks import NotebookError, definitions_module

    out, locations = {}, {}
    for rel in notebooks:
        try:
            module = definitions_module(sub.notebook(rel))
            ast.parse(module.source)
        except (NotebookError, SyntaxError, ValueError) as exc:
            notes.append(f"{rel}: its definitions could not be read ({str(exc)[:120]})")
            continue
        if not module.source.strip():
            continue
        folder, _, name = rel.rpartition("/")
        stem = re.sub(r"\W", "_", name.removesuffix(".ipynb"))
        target = f"{folder}/{GENERATED_PREFIX}{stem}.py" if folder else f"{GENERATED_PREFIX}{stem}.py"
        out[target] = module.source
        locations[target] = {"source": rel, "lines": {n: list(cell) for n, cell in module.line_map.items()}}
    return out, locations


# ---- entry points (the capture run) ---------------------------------------------------------------

MAX_ENTRIES = 3
TRAINING_SIGNS = {
    r"\.backward\(": 3,
    r"optim\.\w+\(|\b(SGD|Adam|AdamW|RMSprop)\(": 3,
    r"\bDataLoader\(|_loader\b": 1,
    r"\b(train|fit|run_epoch|train_model|training_loop)\(": 2,
    r"for\s+epoch\b|\bepochs?\b": 1,
}
ENTRY_NAMES = re.compile(r"(train|main|run|s6|session|colab|assignment)", re.I)
NOT_ENTRIES = re.compile(r"(^|/)(setup|conftest|__init__|__main__)\.py$|(^|/)tests?(/|_)")


def _training_score(text: str) -> tuple[float, list[str]]:
    score, seen = 0.0, []
    for pattern, weight in TRAINING_SIGNS.items():
        if re.search(pattern, text):
            score += weight
            seen.append(pattern)
    return score, seen


def _entry_points(
    sub: Submission,
    files: dict[str, _PyFile],
    notebooks: list[str],
    generated: dict[str, str],
    locations: dict[str, dict],
    notes: list[str],
) -> list[EntryPoint]:
    """The submission's own entry points that train, best first: scripts that do work when run (a
    ``__main__`` block, top-level calls, a ``main`` nobody calls) and notebooks, by their training code."""
    out: list[EntryPoint] = []
    imported: set[str] = set()  # module names other files import (a library, not an entry point)
    for f in files.values():
        for node in ast.walk(f.tree) if f.tree is not None else ():
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[-1] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[-1])
    for rel, f in files.items():
        if f.tree is None or NOT_ENTRIES.search(rel) or _is_generated(rel):
            continue
        body = f.tree.body
        guard = any(isinstance(s, ast.If) and "__main__" in ast.unparse(s.test) for s in body)
        work = any(is_script_work(s) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)) for s in body)
        defines_main = any(isinstance(s, ast.FunctionDef) and s.name == "main" for s in body)
        calls_main = "main(" in "\n".join(ast.unparse(s) for s in body if not isinstance(s, ast.FunctionDef))
        if not (guard or work or defines_main):
            continue
        score, _ = _training_score(f.text)
        if score < 3:
            continue
        reasons = ["a script" + (" with a __main__ block" if guard else "")]
        stem = rel.rsplit("/", 1)[-1].removesuffix(".py")
        if ENTRY_NAMES.search(stem):
            score += 2
        if stem in imported:
            score -= 3  # imported by another file: a library of the real entry point
            reasons.append("imported by another file")
        out.append(
            EntryPoint(rel, rel, "script", score, reasons, call_main=defines_main and not guard and not calls_main)
        )
    for rel in notebooks:
        try:
            nb = sub.notebook(rel)
        except Exception:
            continue
        source, line_map, cells = notebook_run_module(nb)
        score, _ = _training_score(source)
        if score < 3:
            continue
        folder, _, name = rel.rpartition("/")
        stem = re.sub(r"\W", "_", name.removesuffix(".ipynb"))
        target = f"{folder}/{RUN_PREFIX}{stem}.py" if folder else f"{RUN_PREFIX}{stem}.py"
        generated[target] = source
        locations[target] = {"source": rel, "lines": {n: list(c) for n, c in line_map.items()}}
        executed = sum(1 for c in nb.code_cells if c.execution_count is not None)
        if executed:
            score += 1  # run by the student (outputs saved)
        if ENTRY_NAMES.search(name):
            score += 1
        out.append(EntryPoint(target, rel, "notebook", score + 1, ["a notebook's cells in order"], cells))
    out.sort(key=lambda e: (-e.score, e.shown_as))
    if len(out) > MAX_ENTRIES:
        notes.append(
            "the capture run tries " + ", ".join(e.shown_as for e in out[:MAX_ENTRIES]) + f" ({len(out)} could train)"
        )
    return out[:MAX_ENTRIES]


PY_CELL_MAGICS = {"capture", "time", "timeit", "prun", "debug", "memit", "skip", "local", "tensorflow_version"}
LINE_MAGIC = re.compile(r"^(\s*)(?:([\w\s,.\[\]()]+?)\s*=\s*)?([!%])(.*)$")


def notebook_run_module(nb: Any) -> tuple[str, dict[int, tuple[int, int]], list[list]]:
    """A notebook's code cells one after the other as the capture run executes them: IPython lines
    become calls of the run's shims (``!cmd`` -> ``_s6_shell("cmd")``, ``%cd x`` -> ``_s6_magic("cd", "x")``),
    every line keeps its place. Returns the source, its line -> (cell, line in cell) map, and per cell
    [first line, last line, magic, argument, cell]: magic is "" (Python), "writefile" or "skip"."""
    out = ["# A notebook's code cells in order, for the grader's capture run (its IPython lines are shims)."]
    line_map: dict[int, tuple[int, int]] = {}
    cells: list[list] = []
    for cell in nb.code_cells:
        lines, magic, arg = _cell_python(cell.source)
        start = len(out) + 1
        for number, line in enumerate(lines, 1):
            out.append(line)
            line_map[len(out)] = (cell.index, number)
        cells.append([start, len(out), magic, arg, cell.index])
        out.append("")
    return "\n".join(out) + "\n", line_map, cells


def _cell_python(source: str) -> tuple[list[str], str, str]:
    """(lines with the same numbering, magic, argument) for one code cell."""
    lines = source.split("\n")
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        words = lines[first].strip()[2:].split()
        magic = words[0] if words else ""
        if magic in ("writefile", "file"):
            return lines, "writefile", words[-1] if len(words) > 1 else ""
        if magic not in PY_CELL_MAGICS:
            return ["# " + ln for ln in lines], "skip", magic
        lines[first] = ""
    try:
        ast.parse("\n".join(lines))
        return lines, "", ""
    except SyntaxError:
        pass
    for i, line in enumerate(lines):
        match = LINE_MAGIC.match(line)
        if match is None or line.lstrip().startswith("!="):
            continue
        indent, target, kind, rest = match.groups()
        assign = f"{target.strip()} = " if target else ""
        if kind == "!":
            lines[i] = f"{indent}{assign}_s6_shell({rest.strip()!r})"
        else:
            name, _, arg = rest.lstrip("%").partition(" ")
            lines[i] = f"{indent}{assign}_s6_magic({name.strip()!r}, {arg.strip()!r})"
    for i, line in enumerate(lines):
        if re.match(r"^\s*(\?{1,2}[\w.]+|[\w.]+\?{1,2})\s*$", line):
            lines[i] = line[: len(line) - len(line.lstrip())] + "pass"
    try:
        ast.parse("\n".join(lines))
    except SyntaxError:
        return ["# " + ln for ln in source.split("\n")], "skip", "syntax error"
    return lines, "", ""


# ---- model ----------------------------------------------------------------------------------------


def _module_classes(files: dict[str, _PyFile]) -> dict[str, list[tuple[str, ast.ClassDef]]]:
    """nn.Module subclasses (directly, or through another local subclass) per class name."""
    classes: dict[str, list[tuple[str, ast.ClassDef]]] = {}
    for rel, f in files.items():
        if f.tree is None:
            continue
        for node in ast.walk(f.tree):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append((rel, node))
    modules: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, defs in classes.items():
            if name in modules:
                continue
            for _, node in defs:
                bases = [_dotted(b) for b in node.bases]
                if any(b.split(".")[-1] == "Module" or b.split(".")[-1] in modules for b in bases if b):
                    modules.add(name)
                    changed = True
                    break
    return {name: defs for name, defs in classes.items() if name in modules}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _calls_to(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func).split(".")[-1] in names]


def _literal(node: ast.AST, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return ast.literal_eval(node)


def _constants(tree: ast.Module | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tree is None:
        return out
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, SyntaxError, TypeError):
                continue
    return out


def _model_candidates(
    files: dict[str, _PyFile],
    notebooks: dict[str, str],
    pinned: dict,
    problems: list[dict],
    notes: list[str],
    num_classes: int = 10,
) -> list[ModelCandidate]:
    if "model" in pinned:
        spec = str(pinned["model"])
        if ":" not in spec:
            raise DiscoveryError(f"--model/grade.toml model must be FILE:CLASS, not {spec!r}")
        file, cls = spec.rsplit(":", 1)
        kwargs = pinned.get("model_kwargs") or {}
        return [
            ModelCandidate(
                file,
                cls,
                0,
                100.0,
                ["named by " + ("grade.toml" if pinned.get("from_grade_toml") else "--model")],
                [],
                dict(kwargs),
            )
        ]
    broken = [f for f in files.values() if f.tree is None]
    classes = _module_classes(files)
    # A file that does not parse may still hold the model: the probe reports the syntax error.
    for f in broken:
        for m in re.finditer(r"^class\s+(\w+)\s*\(([^)]*Module[^)]*)\)", f.text, re.M):
            line = f.text[: m.start()].count("\n") + 1
            classes.setdefault(m.group(1), []).append(
                (f.rel, ast.ClassDef(name=m.group(1), bases=[], keywords=[], body=[], decorator_list=[], lineno=line))
            )
            problems.append(Failure(ErrorKind.SYNTAX_ERROR, f.error or f"{f.rel} does not parse").to_dict())
    if not classes:
        return []
    names = set(classes)
    used_inside: dict[str, set[str]] = {n: set() for n in names}
    for name, defs in classes.items():
        for _, node in defs:
            for call in _calls_to(node, names):
                callee = _dotted(call.func).split(".")[-1]
                if callee != name:
                    used_inside[callee].add(name)
    # Call sites outside class bodies: training scripts, notebooks, main().
    outside: dict[str, list[tuple[str, ast.Call, SourceValues]]] = {n: [] for n in names}
    sources: list[tuple[str, ast.Module, SourceValues]] = []
    for rel, f in files.items():
        if f.tree is not None:
            sources.append((rel, f.tree, SourceValues(f.tree)))
    for rel, code in notebooks.items():
        try:
            tree = ast.parse(code)
            sources.append((rel, tree, SourceValues(tree)))
        except SyntaxError:
            notes.append(f"{rel}: some cells do not parse; call sites there were not read")
    for rel, tree, consts in sources:
        class_nodes = {id(n) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        inner: set[int] = set()
        for n in ast.walk(tree):
            if id(n) in class_nodes:
                inner.update(id(x) for x in ast.walk(n))
        for call in _calls_to(tree, names):
            if id(call) not in inner:
                outside[_dotted(call.func).split(".")[-1]].append((rel, call, consts))
    out = []
    for name, defs in classes.items():
        for rel, node in defs:
            score, reasons = 0.0, []
            base = rel.rsplit("/", 1)[-1]
            if base in MODEL_FILE_NAMES:
                score += MODEL_FILE_NAMES[base]
                reasons.append(f"in {base}")
            if any(p in MODEL_DIRS for p in rel.split("/")[:-1]):
                score += 1
            sites = outside[name]
            if sites:
                score += 10
                where = sorted({f"{r}:{c.lineno}" for r, c, _ in sites})[:3]
                reasons.append("built by the training code at " + ", ".join(where))
            if used_inside[name]:
                score -= 6
                reasons.append("used as a block inside " + ", ".join(sorted(used_inside[name])))
            has_forward = any(isinstance(b, ast.FunctionDef) and b.name == "forward" for b in node.body)
            if not has_forward and node.body:
                score -= 2
            text = ast.unparse(node) if node.body else ""
            if re.search(r"MaxPool|max_pool", text):
                score -= 1
                reasons.append("uses max pooling")
            if _is_generated(rel):
                score -= 0.5
                reasons.append("defined in a notebook")
            cand = ModelCandidate(rel, name, node.lineno, score, reasons)
            cand.required_params = _required_params(node)
            _call_site_args(cand, sites, notes)
            if pinned.get("model_kwargs"):  # --model-kwargs / grade.toml without --model: for every class
                cand.kwargs = cand.kwargs | dict(pinned["model_kwargs"])
                cand.reasons.append(
                    "constructor arguments from "
                    + ("grade.toml" if pinned.get("from_grade_toml") else "--model-kwargs")
                )
            out += _with_suggested_args(cand, node, num_classes)
    out.sort(key=lambda c: (-c.score, c.file, c.line))
    return out


MAX_ASSUMED_COMBINATIONS = 12


def _with_suggested_args(cand: ModelCandidate, node: ast.ClassDef, num_classes: int) -> list[ModelCandidate]:
    """The candidate, or one per combination of suggested values for the required parameters it lacks."""
    given = set(cand.kwargs) | set(cand.required_params[: len(cand.args)])
    missing = [p for p in cand.required_params if p not in given]
    if not missing:
        return [cand]
    options = [suggestions(node, p, num_classes) for p in missing]
    out: list[ModelCandidate] = []
    for combo in itertools.islice(itertools.product(*options), MAX_ASSUMED_COMBINATIONS):
        alt = ModelCandidate(
            cand.file,
            cand.cls,
            cand.line,
            cand.score - 0.01 * len(out),
            list(cand.reasons),
            list(cand.args),
            dict(cand.kwargs),
            list(cand.required_params),
        )
        for param, (value, why) in zip(missing, combo, strict=True):
            alt.kwargs[param] = value
            alt.assumed.append(f"assumed {param}={value!r} ({why})")
        out.append(alt)
    return out


def _required_params(node: ast.ClassDef) -> list[str]:
    for b in node.body:
        if isinstance(b, ast.FunctionDef) and b.name == "__init__":
            args = b.args.args[1:]
            required = args[: len(args) - len(b.args.defaults)]
            kwonly = [a for a, d in zip(b.args.kwonlyargs, b.args.kw_defaults, strict=True) if d is None]
            return [a.arg for a in required + kwonly]
    return []


def _call_site_args(cand: ModelCandidate, sites: list[tuple[str, ast.Call, SourceValues]], notes: list[str]) -> None:
    """Constructor arguments from the first call site whose values can all be known from the source
    (literals, names assigned before the call, config dicts, argparse defaults)."""
    for rel, call, values in sites:
        try:
            args = [values.value(a) for a in call.args]
            kwargs = {k.arg: values.value(k.value) for k in call.keywords if k.arg}
        except Unresolved:
            continue
        if args or kwargs:
            cand.args, cand.kwargs = args, kwargs
            cand.reasons.append(f"constructor arguments from {rel}:{call.lineno}")
        return
    if cand.required_params and sites:
        notes.append(
            f"{cand.cls} needs {', '.join(cand.required_params)} and no call site has values known without running the code: the grader tries values the class suggests; pin others with --model-kwargs"
        )


# ---- transforms ---------------------------------------------------------------------------------


def _is_train_compose(call: ast.Call) -> bool:
    if _dotted(call.func).split(".")[-1] != "Compose":
        return False
    inner = {_dotted(c.func).split(".")[-1] for c in ast.walk(call) if isinstance(c, ast.Call)}
    return bool(inner & AUG_NAMES)


def _transform_candidates(files: dict[str, _PyFile], pinned: dict) -> list[TransformsCandidate]:
    if "transforms" in pinned:
        spec = str(pinned["transforms"])
        file, _, name = spec.partition(":")
        kwargs = dict(pinned.get("transforms_kwargs") or {})
        return [TransformsCandidate(file, name or None, "pinned", 0, kwargs=kwargs)]
    found: list[tuple[float, TransformsCandidate]] = []
    for rel, f in files.items():
        if f.tree is None:
            continue
        parents = _parent_map(f.tree)
        for call in ast.walk(f.tree):
            if not (isinstance(call, ast.Call) and _is_train_compose(call)):
                continue
            cand = _container(call, parents, rel)
            if cand.kind in ("function", "class"):
                _pipeline_args(cand, f.tree, files)
            sliced = pipeline_slice(f.text, f.tree, call.lineno, guess_value)
            if sliced is not None:
                cand.slice_source, assumed = sliced
                cand.assumed += assumed
            cand.fallback_ok = not any(is_script_work(stmt) for stmt in f.tree.body)
            bonus = 1 if re.search(r"train", ast.unparse(call) + (cand.name or ""), re.I) else 0
            found.append((bonus + {"variable": 3, "function": 2, "class": 1, "import": 0}[cand.kind], cand))
    found.sort(key=lambda t: -t[0] + (0.5 if _is_generated(t[1].file) else 0))
    seen, out = set(), []
    for _, cand in found:
        key = (cand.file, cand.name)
        if key not in seen:
            seen.add(key)
            out.append(cand)
    return out


def _parent_map(tree: ast.AST) -> dict[int, ast.AST]:
    return {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _container(call: ast.Call, parents: dict[int, ast.AST], rel: str) -> TransformsCandidate:
    """How to reach the Compose built by ``call``: a module variable, a function, or a class."""
    chain = []
    node: ast.AST | None = call
    while node is not None:
        chain.append(node)
        node = parents.get(id(node))
    top = chain[-2] if len(chain) >= 2 else call  # the module-level statement
    if isinstance(top, (ast.Assign, ast.AnnAssign)):
        targets = top.targets if isinstance(top, ast.Assign) else [top.target]
        if len(targets) == 1 and isinstance(targets[0], ast.Name):
            return TransformsCandidate(rel, targets[0].id, "variable", call.lineno)
        if isinstance(targets[0], ast.Name) and isinstance(top.value, ast.Dict):
            return TransformsCandidate(rel, None, "import", call.lineno)
    if isinstance(top, ast.FunctionDef):
        return TransformsCandidate(rel, top.name, "function", call.lineno)
    if isinstance(top, ast.ClassDef):
        return TransformsCandidate(rel, top.name, "class", call.lineno)
    return TransformsCandidate(rel, None, "import", call.lineno)


def _pipeline_args(cand: TransformsCandidate, tree: ast.Module, files: dict[str, _PyFile]) -> None:
    """Arguments for a pipeline function or class: from a call site whose values the source gives
    (preferring one that asks for the train pipeline), else by the parameters' names (mean, std...)."""
    definition = next(
        (s for s in tree.body if isinstance(s, (ast.FunctionDef, ast.ClassDef)) and s.name == cand.name), None
    )
    if isinstance(definition, ast.ClassDef):
        definition = next((b for b in definition.body if isinstance(b, ast.FunctionDef) and b.name == "__init__"), None)
        skip = 1
    else:
        skip = 0
    if definition is None:
        return
    params = definition.args.args[skip:]
    required = [a.arg for a in params[: len(params) - len(definition.args.defaults)]]
    sites = []
    for rel, f in files.items():
        if f.tree is None:
            continue
        values = SourceValues(f.tree)
        for call in _calls_to(f.tree, {cand.name or ""}):
            try:
                args = [values.value(a) for a in call.args]
                kwargs = {k.arg: values.value(k.value) for k in call.keywords if k.arg}
            except Unresolved:
                continue
            says_train = (
                any(v is True for k, v in kwargs.items() if "train" in k.lower())
                or "train" in ast.unparse(call).lower()
            )
            says_test = any(v is False for k, v in kwargs.items() if "train" in k.lower())
            sites.append((not says_train, says_test, rel, call.lineno, args, kwargs))
    if sites:
        sites.sort(key=lambda t: (t[1], t[0]))
        _, _, rel, line, cand.args, cand.kwargs = sites[0]
        cand.assumed.append(f"arguments as at {rel}:{line}")
    given = set(cand.kwargs) | set(required[: len(cand.args)])
    for name in required:
        if name in given:
            continue
        guess = guess_value(name)
        cand.kwargs[name] = guess[0] if guess else None
        cand.assumed.append(
            f"assumed {name}={cand.kwargs[name]!r} ({guess[1] if guess else 'no value suggested by the code'})"
        )


def _torchvision_pipeline(files: dict[str, _PyFile]) -> str | None:
    """'file:line' of a torchvision ``transforms.Compose`` with train augmentations, if any."""
    for rel, f in files.items():
        if f.tree is None:
            continue
        for call in _calls_to(f.tree, {"Compose"}):
            inner = {_dotted(c.func).split(".")[-1] for c in ast.walk(call) if isinstance(c, ast.Call)}
            if inner & {"RandomHorizontalFlip", "RandomCrop", "RandomAffine", "RandomErasing", "RandomRotation"}:
                return f"{rel}:{call.lineno}"
    return None


def _aug_calls(files: dict[str, _PyFile], notebooks: dict[str, str]) -> list[SourceCall]:
    """Every CoarseDropout/ShiftScaleRotate/HorizontalFlip/Affine call as written, with literal args."""
    out = []
    trees = [(rel, f.tree, f.text) for rel, f in files.items() if f.tree is not None]
    for rel, code in notebooks.items():
        try:
            trees.append((rel, ast.parse(code), code))
        except SyntaxError:
            continue
    for rel, tree, text in trees:
        consts = _constants(tree)
        for call in _calls_to(tree, AUG_NAMES):
            kwargs: dict[str, Any] = {}
            for k in call.keywords:
                if not k.arg:
                    continue
                try:
                    kwargs[k.arg] = _literal(k.value, consts)
                except (ValueError, SyntaxError, TypeError):
                    kwargs[k.arg] = {"expr": ast.unparse(k.value)}
            snippet = ast.get_source_segment(text, call) or ast.unparse(call)
            out.append(
                SourceCall(_dotted(call.func).split(".")[-1], rel, call.lineno, snippet[:400], kwargs, len(call.args))
            )
    return out
