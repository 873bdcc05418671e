"""What a rule check in ``checks/`` uses (in the spirit of check50).

A check is a pytest test: its docstring is the title a student sees, ``@rule(id, points)`` ties it to a
rubric rule (the rubric's points win over the marker's), and it ends in one of:

- ``check.passed("what was found")`` (or simply returning),
- ``check.fail("what was found and where", hint="how to fix it")``: the rule fails,
- ``undecidable("why")``: the submission broke before the rule could be decided (status ``error``),
- ``not_run("why")``: the rule is not decided in this run (status ``skipped``).

``facts`` (fixture) holds everything the trusted side measured; ``facts.need("graph")`` gates a check
on an earlier stage, so a model that did not import gives one clear reason on every rule that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest


class CheckFailed(AssertionError):
    def __init__(self, message: str, hint: str = "", evidence: dict | None = None):
        super().__init__(message)
        self.message, self.hint, self.evidence = message, hint, evidence or {}


class Undecidable(Exception):
    """The rule cannot be decided because the submission broke earlier (typed reason)."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.message, self.kind = message, kind


class NotRun(Exception):
    """The rule is not decided in this run (e.g. accuracy with --no-train)."""


@dataclass
class Check:
    """Per-check result holder handed to each check as the ``check`` fixture."""

    rule: dict = field(default_factory=dict)  # this rule's rubric table
    message: str = ""
    evidence: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fraction: float | None = None  # partial credit (0..1) where the rubric splits points

    def passed(self, message: str, **evidence: Any) -> None:
        self.message = message
        self.evidence.update(evidence)

    def fail(self, message: str, hint: str = "", **evidence: Any) -> None:
        self.evidence.update(evidence)
        raise CheckFailed(message, hint, self.evidence)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def rule(rule_id: str, points: int = 0) -> pytest.MarkDecorator:
    """Tie a check to a rubric rule id; ``points`` is the default when the rubric has none."""
    return pytest.mark.rule(rule_id, points=points)


def undecidable(message: str, kind: str = "error") -> None:
    raise Undecidable(message, kind)


def not_run(message: str) -> None:
    raise NotRun(message)
