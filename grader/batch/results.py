"""Per-student results as the batch stores them: the grader's own, or a typed error the batch wrote.

Trusted side.
"""

from __future__ import annotations

import datetime
from typing import Any

from grader import __version__
from grader.failures import ErrorKind
from grader.results import RESULTS_SCHEMA
from grader.rubric import max_score

# Errors the batch itself types (the grader types the submission's own: syntax_error, import_error, ...).
BATCH_ERRORS = (
    ErrorKind.TIMEOUT,
    ErrorKind.CRASH,
    ErrorKind.OUT_OF_MEMORY,
    ErrorKind.CLONE_FAILED,
    ErrorKind.UNZIP_FAILED,
    ErrorKind.BATCH_ERROR,
)
# Results worth redoing on the next run even when nothing changed (the cause was outside the submission).
RETRY_ERRORS = (ErrorKind.CLONE_FAILED, ErrorKind.BATCH_ERROR, ErrorKind.GRADER_ERROR)


def error_results(student: str, error: dict, rubric: dict, content_hash: str | None, output: str = "") -> dict:
    """A results dict of the grader's schema for a submission the grader could not finish.

    Every rule is listed with 0 points and status ``error`` so that the gradebook, the index and the
    Gradescope file show the same columns for everybody.
    """
    checks = [
        {
            "id": rule_id,
            "title": rule_id.replace("_", " "),
            "status": "error",
            "points": 0.0,
            "max_points": int(rule.get("points", 0)),
            "message": f"not graded: {error.get('type')}",
            "hint": "",
            "warnings": [],
            "question": rule.get("question", ""),
            "extra": bool(rule.get("extra")),
            "required": not rule.get("extra"),
        }
        for rule_id, rule in rubric["rules"].items()
    ]
    return {
        "schema": RESULTS_SCHEMA,
        "grader_version": __version__,
        "submission": {"path": "", "name": student, "hash": content_hash},
        "generated_at": now(),
        "rubric": rubric["course"].get("name", ""),
        "score": 0,
        "max_score": max_score(rubric),
        "bonus": 0,
        "checks": checks,
        "facts": {},
        "warnings": [],
        # The caller's failure cut to its two keys, its kind passed on as given (no failure is made here).
        "error": {"type": error.get("type", ErrorKind.BATCH_ERROR.value), "message": str(error.get("message", ""))},
        "output": output[-20000:],
        "timings": {},
    }


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def gradescope(results: dict) -> dict[str, Any]:
    """Gradescope's autograder ``results.json``: the score and one test per rule."""
    tests = []
    for check in results.get("checks", []):
        output = check.get("message", "")
        if check.get("hint") and check.get("status") == "failed":
            output += f"\nHint: {check['hint']}"
        tests.append(
            {
                "name": check.get("title") or check.get("id"),
                "score": check.get("points", 0),
                "max_score": check.get("max_points", 0),
                "output": output,
                # Gradescope knows passed/failed only: a skipped rule (not graded yet) shows as failed with its reason.
                "status": "passed" if check.get("status") == "passed" else "failed",
            }
        )
    error = results.get("error")
    out: dict[str, Any] = {
        "score": float(results.get("score", 0)) + float(results.get("bonus", 0) or 0),
        "tests": tests,
        "visibility": "visible",
    }
    if error:
        out["output"] = f"{error.get('type')}: {error.get('message')}"
    return out
