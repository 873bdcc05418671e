"""The rubric: rules, thresholds and points, from TOML (a course replaces the default file).

Trusted side.
"""

from __future__ import annotations

import ast
import copy
import sys
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

RULE_IDS = (
    "no_maxpool",
    "architecture",
    "receptive_field",
    "depthwise_separable",
    "dilated",
    "gap",
    "gpu",
    "params",
    "augmentations",
    "accuracy",
    "training_log",
    "readme",
    "bonus",
)


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


def load_rubric(path: Path | None = None, check_dirs: list[Path] | None = None) -> dict[str, Any]:
    """The default rubric, with ``path``'s values laid over it.

    A course's own checks (``check_dirs``, and ``[course] checks`` in the rubric, relative to it) add
    rules: their ids come from the ``@rule`` markers collected there, their points from the rubric
    (the marker's value only when the rubric gives none). ``rubric["course"]["check_dirs"]`` lists
    every folder of extra checks.
    """
    rubric = tomllib.loads(default_rubric_text())
    override: dict[str, Any] = {}
    if path is not None:
        try:
            override = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RubricError(f"cannot read rubric {path}: {exc}") from exc
    dirs = [Path(d).resolve() for d in check_dirs or []]
    for entry in override.get("course", {}).get("checks", []):
        assert path is not None  # the override that names the folder was read from it
        folder = Path(entry) if Path(entry).is_absolute() else Path(path).resolve().parent / entry
        dirs.append(folder.resolve())
    for folder in dirs:
        if not folder.is_dir():
            raise RubricError(f"the checks folder {folder} does not exist")
    markers = collect_rule_markers(dirs)
    unknown = set(override.get("rules", {})) - set(RULE_IDS) - set(markers)
    if unknown:
        raise RubricError(
            f"rubric {path} names unknown rules: {', '.join(sorted(unknown))} (known: {', '.join([*RULE_IDS, *markers])})"
        )
    _check_keys(override, rubric, path)
    rubric = _merge(rubric, override)
    _check_required(rubric, path)
    for rule_id, points in markers.items():  # a course rule the rubric leaves out: the marker's points
        rubric["rules"].setdefault(rule_id, {"points": points, "question": "course checks"})
    rubric["course"]["check_dirs"] = [str(d) for d in dirs]
    return rubric


RULE_KEYS = {"points", "question", "extra", "required", "visibility"}  # any rule may set these

# The recipe's hyperparameters a rubric's [training] may override (and a submission's [grade.training] ask
# for, where the rubric's [training.submission_may_set] lists the key with its range). Their defaults are grader/training/recipe.py's HYP, and nowhere else: the default
# rubric's [training] holds only the caps and the policy.
TRAINING_OVERRIDES = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "label_smoothing",
    "bn_batch",
    "warmup_fraction",
    "ema_decay",
    "plain_final_epochs",
    "whiten_first_conv",
)
# ...and those only a rubric may set: a submission that could choose its seed could try seeds until
# its model passes; bf16 (autocast on CUDA) is the course's choice of speed against exactness.
TRAINING_RUBRIC_ONLY = ("seed", "bf16")

# What the built-in checks (and the training job) read from the rubric, with no default of their own:
# the default rubric sets every one; a course's rubric may change them, never leave one out.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "rules.architecture": ("transitions", "min_transition_kernel"),
    "rules.receptive_field": ("greater_than",),
    "rules.params": ("less_than", "hidden_budget"),
    "rules.augmentations": (
        "required",
        "accept_affine_for_shift_scale_rotate",
        "unit_mistake_credit",
        "coarse_dropout",
    ),
    "rules.augmentations.coarse_dropout": ("holes", "height", "width", "fill_tolerance", "mask_fill"),
    "rules.accuracy": ("target", "consistency_margin"),
    "rules.training_log": ("target",),
    "training": ("max_epochs", "early_stop", "evidence_max_epochs", "submission_may_set"),
    "limits": ("probe_seconds", "probe_memory_mb", "train_seconds", "train_memory_mb"),
}


def _check_required(rubric: dict, path: Path | None) -> None:
    """Every threshold a check reads is there: a table replaced by a value (``coarse_dropout = 1``) or a
    default rubric without one is a one-line error naming the table and the keys."""
    where = f"rubric {path}" if path is not None else "the default rubric"
    for table, keys in REQUIRED_KEYS.items():
        node: Any = rubric
        for part in table.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise RubricError(f"{where}: [{table}] must be a table with {', '.join(keys)}")
        missing = [key for key in keys if key not in node]
        if missing:
            raise RubricError(f"{where}: [{table}] has no {', '.join(missing)} (a check reads it and has no default)")


def _check_keys(override: dict, default: dict, path: Path | None) -> None:
    """A misspelt key (``point = 5``) or an unknown table is an error naming it and the known ones."""
    for table, value in override.items():
        if table not in default:
            raise RubricError(f"rubric {path}: unknown table [{table}] (known: {', '.join(default)})")
        if table == "rules":
            for rule_id, spec in value.items():
                if rule_id not in default["rules"] or not isinstance(spec, dict):
                    continue  # a course rule defines its own keys
                _known(spec, default["rules"][rule_id], RULE_KEYS, f"[rules.{rule_id}]", path)
        elif isinstance(value, dict):
            also = (
                {"checks"}
                if table == "course"
                else set(TRAINING_OVERRIDES + TRAINING_RUBRIC_ONLY)
                if table == "training"
                else set()
            )
            _known(value, default[table], also, f"[{table}]", path)


def _known(given: dict, default: dict, also: set[str], where: str, path: Path | None) -> None:
    for key, value in given.items():
        if key not in default and key not in also:
            known = sorted(set(default) | also)
            raise RubricError(f"rubric {path}: unknown key {key!r} in {where} (known: {', '.join(known)})")
        if key == "submission_may_set":
            _check_submission_may_set(value, f"{where[:-1]}.{key}]", path)
        elif isinstance(value, dict) and isinstance(default.get(key), dict):
            _known(value, default[key], set(), f"{where[:-1]}.{key}]", path)


def _check_submission_may_set(table: Any, where: str, path: Path | None) -> None:
    """``{key = [low, high]}``: recipe settings a submission's grade.toml may ask for, within the range."""
    if not isinstance(table, dict):
        raise RubricError(f"rubric {path}: {where} must be a table of key = [low, high]")
    for key, bounds in table.items():
        if key not in TRAINING_OVERRIDES:
            raise RubricError(
                f"rubric {path}: {where} names {key!r}, which is not a recipe setting ({', '.join(TRAINING_OVERRIDES)})"
            )
        numbers = isinstance(bounds, list) and len(bounds) == 2
        if not numbers or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
            raise RubricError(f"rubric {path}: {where} {key} must be [low, high], not {bounds!r}")
        if bounds[0] > bounds[1]:
            raise RubricError(f"rubric {path}: {where} {key}: low {bounds[0]} is above high {bounds[1]}")


def collect_rule_markers(dirs: list[Path]) -> dict[str, int]:
    """rule id -> the points its ``@rule(id, points=N)`` marker suggests, read from the files' AST.

    A file that does not parse is left out here; running it gives that rule a typed error.
    """
    out: dict[str, int] = {}
    for folder in dirs:
        for file in sorted(Path(folder).glob("*.py")):
            try:
                tree = ast.parse(file.read_text())
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef):
                    continue
                for deco in node.decorator_list:
                    if (
                        isinstance(deco, ast.Call)
                        and getattr(deco.func, "id", getattr(deco.func, "attr", "")) == "rule"
                        and deco.args
                    ):
                        first = deco.args[0]
                        if isinstance(first, ast.Constant) and isinstance(first.value, str):
                            # Any constant: int() takes "3" or 3.0 and refuses None as it always has.
                            points: Any = next(
                                (
                                    k.value.value
                                    for k in deco.keywords
                                    if k.arg == "points" and isinstance(k.value, ast.Constant)
                                ),
                                0,
                            )
                            out.setdefault(first.value, int(points))
    return out


def max_score(rubric: dict) -> int:
    """Points of every rule that is not extra (the bonus is on top)."""
    return sum(int(r.get("points", 0)) for r in rubric["rules"].values() if not r.get("extra"))
