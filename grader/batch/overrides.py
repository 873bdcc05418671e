"""Per-student overrides for a class (``grade batch --overrides FILE``), so a TA never edits a submission.

Trusted side.

TOML, one table per student::

    [alice]
    model = "src/net.py:Net"
    model_kwargs = { norm = "bn" }
    transforms = "data.py:get_transforms"
    transforms_kwargs = { train = true }
    folder = "S6"                       # grade this sub-folder of the repository

or CSV with a ``student`` column and any of the others (``model_kwargs``/``transforms_kwargs`` as JSON).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

KEYS = ("model", "model_kwargs", "transforms", "transforms_kwargs", "folder")
FLAGS = {
    "model": "--model",
    "model_kwargs": "--model-kwargs",
    "transforms": "--transforms",
    "transforms_kwargs": "--transforms-kwargs",
}


class OverridesError(Exception):
    """The overrides file is unreadable or names an unknown key; the message says which."""


def load_overrides(path: Path) -> dict[str, dict]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise OverridesError(f"cannot read overrides {path}: {exc}") from exc
    if Path(path).suffix.lower() == ".csv":
        table = _from_csv(text, path)
    else:
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise OverridesError(f"overrides {path} is not valid TOML: {exc}") from exc
    for student, values in table.items():
        if not isinstance(values, dict):
            raise OverridesError(f"overrides {path}: [{student}] must be a table of {', '.join(KEYS)}")
        unknown = set(values) - set(KEYS)
        if unknown:
            raise OverridesError(
                f"overrides {path}: [{student}] has unknown keys {', '.join(sorted(unknown))} (known: {', '.join(KEYS)})"
            )
        for key in ("model_kwargs", "transforms_kwargs"):
            if key in values and not isinstance(values[key], dict):
                raise OverridesError(f"overrides {path}: [{student}] {key} must be a table/JSON object")
    return table


def _from_csv(text: str, path: Path) -> dict[str, dict]:
    rows = list(csv.DictReader(text.splitlines()))
    if rows and "student" not in rows[0]:
        raise OverridesError(f"overrides {path}: the CSV needs a 'student' column")
    table: dict[str, dict] = {}
    for row in rows:
        values = {k: v for k, v in row.items() if k != "student" and v not in (None, "")}
        for key in ("model_kwargs", "transforms_kwargs"):
            if key in values:
                try:
                    values[key] = json.loads(values[key])
                except json.JSONDecodeError as exc:
                    raise OverridesError(f"overrides {path}: {row['student']}'s {key} is not JSON: {exc}") from exc
        table[row["student"]] = values
    return table


def grade_args(values: dict) -> list[str]:
    """The `grade` options one student's overrides become (``folder`` is applied to the source)."""
    out: list[str] = []
    for key, flag in FLAGS.items():
        if key in values:
            value = values[key]
            out += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return out
