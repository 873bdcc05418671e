"""Static facts read from the submission's text: GPU use, mentions of max pooling, and code that watches the grader.

Trusted side.

The GPU rule is static by nature (the grader cannot watch the student's own run): the training code
must pick the GPU when there is one (``torch.device("cuda" ...)``, ``.cuda()``, ``device="cuda"``)
and move the model or the data there (``.to(device)``, ``.cuda()``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from grader.submission import Submission, as_submission

DEVICE_PICK = re.compile(
    r"""torch\.device\(\s*['"]cuda|['"]cuda(:\d)?['"]\s*if\s+torch\.cuda\.is_available|torch\.cuda\.is_available\(\)|device\s*=\s*['"]cuda"""
)
MOVE = re.compile(r"\.to\(\s*(device|dev|DEVICE|self\.device|['\"]cuda)|\.cuda\(\)|device\s*=\s*device")
MAXPOOL = re.compile(r"MaxPool|max_pool|maxpool", re.I)
# Code that asks whether it is being exported, compiled, traced or graded can run one network for the
# grader and another for itself (a max pool "unless exporting"): the graph is then not what runs.
WATCHES = re.compile(
    r"""is_exporting|is_compiling|torch\._dynamo|\b_dynamo\b|is_tracing|is_scripting|is_fx_tracing|_symbolic_trace"""
    r"""|FakeTensor|in_fake_mode|_subclasses\.fake|torch\._guards|torch\._C\._is_|sys\._getframe|inspect\.(stack|currentframe|getouterframes)"""
    r"""|extract_stack|format_stack|gc\.get_(objects|referrers)|sys\.modules|^\s*(from|import)\s+grader\b"""
    r"""|(__import__|import_module)\(\s*['"]grader"""
)


@dataclass
class SourceFacts:
    device_lines: list[str] = field(default_factory=list)  # 'train.py:12: device = torch.device(...)'
    move_lines: list[str] = field(default_factory=list)
    maxpool_lines: list[str] = field(default_factory=list)
    watch_lines: list[str] = field(default_factory=list)  # code that asks whether it is exported or graded
    texts: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (file or cell, code) as read


def _code_texts(sub: Submission, py_files: list[str], notebooks: list[str]) -> list[tuple[str, str]]:
    from grader.evidence.notebooks import NotebookError

    out = []
    for rel in py_files:
        try:
            out.append((rel, sub.source(rel)))
        except OSError:
            continue
    for rel in notebooks:
        try:
            cells = sub.notebook(rel).code_cells
        except NotebookError:
            continue
        out += [(f"{rel} cell {cell.index}", cell.source) for cell in cells]
    return out


def read_sources(source: Path | Submission, py_files: list[str], notebooks: list[str]) -> SourceFacts:
    """Device selection, moves to the device, max pooling and watching the grader, line by line in code
    and code cells."""
    facts = SourceFacts()
    facts.texts = _code_texts(as_submission(source), py_files, notebooks)
    for name, text in facts.texts:
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("#"):
                continue
            where = f"{name}:{number}: {stripped[:120]}"
            if DEVICE_PICK.search(line):
                facts.device_lines.append(where)
            if MOVE.search(line):
                facts.move_lines.append(where)
            if MAXPOOL.search(line):
                facts.maxpool_lines.append(where)
            if WATCHES.search(line):
                facts.watch_lines.append(where)
    return facts
