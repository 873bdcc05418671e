"""Locations a student recognises: a line of a generated module becomes the line of the student's file.

Trusted side.

Discovery writes modules the student never wrote: a notebook's definitions (``_s6_notebook_*.py``,
with a map from each of its lines to a cell and a line of that cell) and the train pipeline's slice
(``_s6_pipeline_*.py``, the same lines as the file it was cut from). Every message, hint and location
in the results goes through ``relabel_results`` before anyone reads it.
"""

from __future__ import annotations

import re
from typing import Any


def relabel_text(text: str, locations: dict[str, dict]) -> str:
    """``text`` with ``generated.py:N`` replaced by ``file.py:N`` or ``notebook.ipynb cell C line L``, and a
    generated module's import name (``_s6_pipeline__s6_notebook_s7``, ``S6._s6_notebook_s7``) by its file."""
    if not locations or not isinstance(text, str) or "_s6_" not in text:
        return text
    forms = _forms(locations)
    names = sorted(forms, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in names) + r")(?::(\d+))?(?!\w)")

    def replace(match: re.Match) -> str:
        generated, is_file = forms[match.group(1)]
        line = int(match.group(2)) if match.group(2) and is_file else None
        where = _where(generated, line, locations)
        return where if is_file or not match.group(2) else f"{where}:{match.group(2)}"

    return pattern.sub(replace, text)


def _forms(locations: dict[str, dict]) -> dict[str, tuple[str, bool]]:
    """Every way a message can name a generated file: its path, its base name, and the module names
    Python gives it (``a/b/_s6_x.py`` -> ``a.b._s6_x``, ``b._s6_x``, ``_s6_x``); -> (file, is a file name)."""
    forms: dict[str, tuple[str, bool]] = {}
    for generated in locations:
        parts = generated.removesuffix(".py").split("/")
        for i in range(len(parts)):
            forms.setdefault(".".join(parts[i:]), (generated, False))
        forms.setdefault(parts[-1] + ".py", (generated, True))
        forms[generated] = (generated, True)
    return forms


def _where(generated: str, line: int | None, locations: dict[str, dict]) -> str:
    entry = locations[generated]
    source = entry["source"]
    if source in locations:  # a slice of a notebook's module: first to that module, then to the cell
        return _where(source, line, locations)
    lines = entry.get("lines")
    if lines is None:
        return f"{source}:{line}" if line else source
    if line is None:
        return source
    cell = lines.get(line) or lines.get(str(line))
    return f"{source} cell {cell[0]} line {cell[1]}" if cell else source


def _is_image(key: Any) -> bool:
    return isinstance(key, str) and (key.endswith("_png") or key in ("augmented_grid", "locations"))


def relabel_results(value: Any, locations: dict[str, dict]) -> Any:
    """Every string inside ``value`` (dicts and lists, recursively) relabelled; images left alone."""
    if not locations:
        return value
    if isinstance(value, str):
        return relabel_text(value, locations)
    if isinstance(value, list):
        return [relabel_results(v, locations) for v in value]
    if isinstance(value, dict):
        return {k: (v if _is_image(k) else relabel_results(v, locations)) for k, v in value.items()}
    return value
