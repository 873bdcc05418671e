"""Static facts read from the submission's text: GPU use and mentions of max pooling.

Trusted side.

The GPU rule is static by nature (the grader cannot watch the student's own run): the training code
must pick the GPU when there is one (``torch.device("cuda" ...)``, ``.cuda()``, ``device="cuda"``)
and move the model or the data there (``.to(device)``, ``.cuda()``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

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


def _code_texts(root: Path, py_files: list[str], notebooks: list[str]) -> list[tuple[str, str]]:
    out = []
    for rel in py_files:
        try:
            out.append((rel, (root / rel).read_text(errors="replace")))
        except OSError:
            continue
    for rel in notebooks:
        try:
            nb = json.loads((root / rel).read_text(errors="replace"))
        except (OSError, ValueError):
            continue
        for i, cell in enumerate(nb.get("cells", []) if isinstance(nb, dict) else []):
            if isinstance(cell, dict) and cell.get("cell_type") == "code":
                src = cell.get("source", "")
                out.append((f"{rel} cell {i + 1}", "".join(src) if isinstance(src, list) else str(src)))
    return out


def read_sources(root: Path, py_files: list[str], notebooks: list[str]) -> SourceFacts:
    facts = SourceFacts()
    for name, text in _code_texts(root, py_files, notebooks):
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
