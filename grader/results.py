"""The results of one grading, shared by the CLI, the pipeline and the batch: the schema, the exit
status and the class status a results dict stands for. (Trusted side; imports nothing of the grader.)"""

from __future__ import annotations

RESULTS_SCHEMA = "s6-grader/results/1"


def exit_status(results: dict) -> int:
    err = results.get("error") or {}
    if err.get("type") in ("grader_error", "discovery_failed"):
        return 2
    required = [c for c in results.get("checks", []) if c.get("required", True) and not c.get("extra")]
    if err or any(c["status"] in ("failed", "error") for c in required):
        return 1
    return 0


def status_of(results: dict) -> str:
    """passed (every required rule passed), failed (a rule failed) or error (the submission broke)."""
    if results.get("error"):
        return "error"
    return "passed" if exit_status(results) == 0 else "failed"
