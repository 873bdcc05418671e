"""The rubric: rules, thresholds and points, from TOML (a course replaces the default file)."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

RULE_IDS = (
    "no_maxpool", "architecture", "receptive_field", "depthwise_separable", "dilated", "gap", "gpu",
    "params", "augmentations", "accuracy", "training_log", "readme", "bonus",
)  # fmt: skip


class RubricError(Exception):
    """The rubric file is unreadable or names unknown rules."""


def default_rubric_text() -> str:
    return resources.files("grader").joinpath("rubric.toml").read_text()


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_rubric(path: Path | None = None) -> dict[str, Any]:
    """The default rubric, with ``path``'s values laid over it."""
    rubric = tomllib.loads(default_rubric_text())
    if path is not None:
        try:
            override = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RubricError(f"cannot read rubric {path}: {exc}") from exc
        unknown = set(override.get("rules", {})) - set(RULE_IDS)
        if unknown:
            raise RubricError(f"rubric {path} names unknown rules: {', '.join(sorted(unknown))} (known: {', '.join(RULE_IDS)})")  # fmt: skip
        rubric = _merge(rubric, override)
    return rubric


def max_score(rubric: dict) -> int:
    """Points of every rule that is not extra (the bonus is on top)."""
    return sum(int(r.get("points", 0)) for r in rubric["rules"].values() if not r.get("extra"))
