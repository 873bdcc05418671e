"""Static facts read from the submission's text: GPU use and mentions of max pooling.

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


@dataclass
class SourceFacts:
    device_lines: list[str] = field(default_factory=list)  # 'train.py:12: device = torch.device(...)'
    move_lines: list[str] = field(default_factory=list)
    maxpool_lines: list[str] = field(default_factory=list)


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
    """Device selection, moves to the device and max pooling, line by line in code and code cells."""
    facts = SourceFacts()
    for name, text in _code_texts(as_submission(source), py_files, notebooks):
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
    return facts
