"""Trusted side: the recipe's hyperparameters for one grading, and what a submission may ask for.

The recipe's defaults (``recipe.HYP``), then the course's rubric (``[training]``, trusted), then what the
submission's ``grade.toml`` asks (``[grade.training]``, untrusted): only the keys the rubric's
``submission_may_set`` lists, each brought into its range. Anything else is ignored with a note the
report shows: a submission must not buy accuracy with compute (``batch_size = 1``) or train without the
augmentations the rule credits (``plain_final_epochs``).
"""

from __future__ import annotations

from typing import Any

from grader.rubric import TRAINING_OVERRIDES, TRAINING_RUBRIC_ONLY
from grader.training import recipe


def resolve_hyp(rubric_training: dict, requested: dict | None, epochs: int | None) -> tuple[dict, list[str]]:
    """(hyperparameters, notes): the recipe's defaults, the rubric's overrides, the submission's
    allowed requests, and a TA's ``--epochs`` (capped by the rubric's ``max_epochs``)."""
    hyp: dict[str, Any] = dict(recipe.HYP)
    notes: list[str] = []
    for key in TRAINING_OVERRIDES + TRAINING_RUBRIC_ONLY:
        if key in rubric_training:
            hyp[key] = rubric_training[key]
    allowed: dict[str, list] = dict(rubric_training.get("submission_may_set") or {})
    for key, value in (requested or {}).items():
        if key in TRAINING_RUBRIC_ONLY:
            notes.append(f"training setting {key}={value!r} ignored: only the course's rubric sets the {key}")
            continue
        if key not in allowed:
            may = ", ".join(sorted(allowed)) or "nothing"
            notes.append(f"training setting {key}={value!r} ignored: a submission may set {may}")
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            notes.append(f"training setting {key}={value!r} ignored: not a number")
            continue
        low, high = allowed[key]
        if not low <= value <= high:
            bounded = min(max(value, low), high)
            notes.append(f"{key}={value} is outside the course's range {low}-{high}; {bounded} used")
            value = bounded
        hyp[key] = type(hyp[key])(value)
    if epochs is not None:
        cap = int(rubric_training["max_epochs"])
        if epochs > cap:
            notes.append(f"--epochs {epochs} is over the rubric's cap; {cap} used")
        hyp["epochs"] = max(1, min(int(epochs), cap))
    return hyp, notes
