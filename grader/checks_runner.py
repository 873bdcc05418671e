"""Run the rule checks in ``checks/`` with pytest, in-process, over the facts; collect one result per rule.

Trusted side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from grader.checks_api import Check, CheckFailed, NotRun, Undecidable
from grader.failures import ErrorKind

# pytest's own plugins that a run of the rule checks never uses (terminal, cacheprovider, warnings and
# timeout are turned off beside them).
UNUSED_PLUGINS = (
    "unraisableexception",
    "threadexception",
    "pastebin",
    "junitxml",
    "doctest",
    "stepwise",
    "setuponly",
    "setupplan",
    "faulthandler",
    "legacypath",
    "subtests",
)


@dataclass
class CheckResult:
    id: str
    title: str
    status: str  # passed | failed | skipped | error
    points: float
    max_points: int
    message: str
    hint: str = ""
    evidence: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    question: str = ""
    extra: bool = False
    required: bool = True
    visibility: str = "visible"  # "hidden": in the TA's gradebook and results, not the student's report

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def checks_dir() -> Path:
    return Path(str(resources.files("grader.checks")))


class _Plugin:
    """Gives checks their ``facts``/``check`` fixtures and records each outcome."""

    def __init__(self, facts: Any, rubric: dict):
        self._facts, self._rubric = facts, rubric
        self._results: list[CheckResult] = []
        self._holders: dict[str, Check] = {}

    @pytest.fixture
    def facts(self) -> Any:
        return self._facts

    @pytest.fixture
    def rubric(self) -> dict:
        return self._rubric

    @pytest.fixture
    def check(self, request: pytest.FixtureRequest) -> Check:
        rule_id, _ = _rule_of(request.node)
        holder = Check(rule=self._rubric["rules"].get(rule_id, {}))
        self._holders[request.node.nodeid] = holder
        return holder

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A check file that cannot be loaded (a course's malformed check): a typed error, the rest runs."""
        if not report.failed:
            return
        path = Path(str(report.fspath))
        text = str(report.longrepr).strip().splitlines()
        reason = next(
            (line.strip() for line in reversed(text) if line.strip().startswith("E ")), text[-1] if text else ""
        )
        self._results.append(
            CheckResult(
                id=path.stem.removeprefix("test_"),
                title=f"course checks in {path.name}",
                status="error",
                points=0.0,
                max_points=0,
                message=f"the check file {path.name} could not be loaded: {reason.removeprefix('E').strip()}"[:500],
                evidence={"error_type": ErrorKind.CHECK_FILE_ERROR.value},
                question="course checks",
            )
        )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        outcome = yield
        report = outcome.get_result()
        if call.when == "setup" and call.excinfo is not None and not report.skipped:
            self._record(item, "error", f"the check could not start: {call.excinfo.value}", "")
        if call.when != "call":
            return
        holder = self._holders.get(item.nodeid, Check())
        exc = call.excinfo.value if call.excinfo is not None else None
        if exc is None:
            self._record(item, "passed", holder.message or "passed", "", holder)
        elif isinstance(exc, CheckFailed):
            self._record(item, "failed", exc.message, exc.hint, holder)
        elif isinstance(exc, Undecidable):
            self._record(item, "error", exc.message, error_hint(exc.kind), holder, kind=exc.kind)
        elif isinstance(exc, NotRun) or (call.excinfo is not None and call.excinfo.typename == "Skipped"):
            self._record(item, "skipped", str(getattr(exc, "msg", None) or exc), "", holder)
        elif isinstance(exc, AssertionError):
            self._record(item, "failed", str(exc).split("\n")[0] or "assertion failed", "", holder)
        else:
            self._record(
                item,
                "error",
                f"the check itself failed: {type(exc).__name__}: {exc}",
                "",
                holder,
                kind=ErrorKind.GRADER_BUG.value,
            )

    def _record(
        self, item: pytest.Item, status: str, message: str, hint: str, holder: Check | None = None, kind: str = ""
    ) -> None:
        rule_id, default_points = _rule_of(item)
        spec = self._rubric["rules"].get(rule_id, {})
        max_points = int(spec.get("points", default_points))
        holder = holder or Check()
        if status == "passed":
            points = max_points * (holder.fraction if holder.fraction is not None else 1.0)
        elif status == "failed" and holder.fraction is not None:
            points = max_points * holder.fraction
        else:
            points = 0.0
        evidence = dict(holder.evidence)
        if kind:
            evidence["error_type"] = kind
        doc = _title((getattr(item, "function", None).__doc__ or item.name).strip().splitlines()[0], spec)
        self._results.append(
            CheckResult(
                id=rule_id,
                title=doc,
                status=status,
                points=round(points, 2),
                max_points=max_points,
                message=message,
                hint=hint,
                evidence=evidence,
                warnings=holder.warnings,
                question=spec.get("question", ""),
                extra=bool(spec.get("extra", False)),
                required=bool(spec.get("required", not spec.get("extra", False))),
                visibility=str(spec.get("visibility", "visible")),
            )
        )


# Keyed by ErrorKind, a str: error_hint looks up the plain string a check's evidence carries.
ERROR_HINTS: dict[str, str] = {
    ErrorKind.SYNTAX_ERROR: "fix the syntax error at the place shown, then grade again",
    ErrorKind.IMPORT_ERROR: "install or remove the import named in the message (the grader has torch, torchvision, albumentations, numpy, matplotlib, tqdm, torchinfo)",
    ErrorKind.TIMEOUT: 'the model\'s module must not train or download at import: put that work under `if __name__ == "__main__":`',
    ErrorKind.CUDA_REQUIRED: "build the model on the CPU: move it to the GPU in the training code, not in __init__ or at import",
    ErrorKind.EXIT_CALLED: "do not call exit() or sys.exit() at import time",
    ErrorKind.MODEL_NOT_FOUND: "point at the model with --model FILE:CLASS (or grade.toml)",
    ErrorKind.MODEL_BUILD_FAILED: "the constructor needs values the grader could not find: pin them with --model-kwargs (or grade.toml)",
    ErrorKind.WRONG_OUTPUT_SHAPE: "the model must map (N, 3, 32, 32) to (N, 10) class scores",
    ErrorKind.NOT_ALBUMENTATIONS: "build the train pipeline with albumentations: A.Compose([A.HorizontalFlip(), A.ShiftScaleRotate(), A.CoarseDropout(...)])",
    ErrorKind.NOT_FOUND: "point at the train pipeline with --transforms FILE:NAME (or grade.toml)",
    ErrorKind.WRITES_OWN_TENSOR: "a forward computes from its input and its weights: keep state out of it (only BatchNorm updates its statistics)",
    ErrorKind.WATCHES_GRADER: "remove the code that checks whether the model is exported, traced or graded: the model must be the same network whoever runs it",
    ErrorKind.HIDDEN_DATA: "keep every weight in nn.Parameter (float); buffers are for BatchNorm statistics and a few constants",
    ErrorKind.RF_MISMATCH: "the receptive field is checked by hand: build the network from convolutions (pooling, if any, as nn layers) so that the grader's recurrence and its gradient measurement agree",
}

# The kinds with no hint of their own, and why: every ErrorKind is in ERROR_HINTS or here, never both
# (tests/unit/test_unit_failures.py), so a new kind gets a hint or a reason it needs none.
_ENDS_THE_GRADING = "the whole grading's error (results' top-level error), never a rule's reason"
_TRAINING_ONLY = "only the training job's: the accuracy rule fails with its message (no error_hint)"
_NOT_THE_STUDENTS = "the grader's or a course check's own fault: recorded with no hint"
_GENERIC_FAILED = "a *_failed kind: error_hint's answer for those (the message says what failed)"
_EARLIER_STAGE = "error_hint's fallback: the error at the top of the report says what broke"
NO_OWN_HINT = {
    ErrorKind.DISCOVERY_FAILED: _ENDS_THE_GRADING,
    ErrorKind.BAD_PIN: _ENDS_THE_GRADING,
    ErrorKind.GRADER_ERROR: _ENDS_THE_GRADING,
    ErrorKind.BATCH_ERROR: _ENDS_THE_GRADING,
    ErrorKind.BAD_OVERRIDE: _ENDS_THE_GRADING,
    ErrorKind.CLONE_FAILED: _ENDS_THE_GRADING,
    ErrorKind.UNZIP_FAILED: _ENDS_THE_GRADING,
    ErrorKind.DIVERGED: _TRAINING_ONLY,
    ErrorKind.RESUME_FAILED: _TRAINING_ONLY,
    ErrorKind.TRAINING_FAILED: _TRAINING_ONLY,
    ErrorKind.EVALUATION_FAILED: _TRAINING_ONLY,
    ErrorKind.BAD_CHECKPOINT: _TRAINING_ONLY,
    ErrorKind.EXPORT_MISMATCH: _TRAINING_ONLY,
    ErrorKind.BATCH_DEPENDENT: _TRAINING_ONLY,
    ErrorKind.GRADER_BUG: _NOT_THE_STUDENTS,
    ErrorKind.CHECK_FILE_ERROR: _NOT_THE_STUDENTS,
    ErrorKind.SANDBOX_FAILED: _GENERIC_FAILED,
    ErrorKind.IMPORT_FAILED: _GENERIC_FAILED,
    ErrorKind.TRANSFORMS_BUILD_FAILED: _GENERIC_FAILED,
    ErrorKind.EXPORT_FAILED: _GENERIC_FAILED,
    ErrorKind.PROBE_FAILED: _GENERIC_FAILED,
    ErrorKind.GRAPH_FAILED: _GENERIC_FAILED,
    ErrorKind.CRASH: _EARLIER_STAGE,
    ErrorKind.OUT_OF_MEMORY: _EARLIER_STAGE,
    ErrorKind.FILE_TOO_LARGE: _EARLIER_STAGE,
    ErrorKind.TOO_LARGE: _EARLIER_STAGE,
    ErrorKind.UNSAFE_OUTPUT: _EARLIER_STAGE,
    ErrorKind.BAD_GRAPH: _EARLIER_STAGE,
    ErrorKind.WEIGHTS_MISMATCH: _EARLIER_STAGE,
    ErrorKind.UNSUPPORTED_OP: _EARLIER_STAGE,
    ErrorKind.NO_FEATURE_MAP: _EARLIER_STAGE,
    ErrorKind.NOT_ANALYSED: _EARLIER_STAGE,
    ErrorKind.UNDECIDED: _EARLIER_STAGE,
}


def error_hint(kind: str) -> str:
    """What to do about a rule that could not be decided, by the kind of error that stopped it."""
    if kind in ERROR_HINTS:
        return ERROR_HINTS[kind]
    if kind.endswith("_failed"):
        return "the message says what failed; fix it (or pin what the grader guessed) and grade again"
    return "an earlier stage broke: fix the error shown at the top of the report, then grade again"


def _title(doc: str, rule: dict) -> str:
    """A check's title, its rubric values filled in: "more than {greater_than}" reads "more than 44"
    with the default rubric and what a course's rubric sets otherwise. A title naming a key the rule
    does not have is shown as written."""
    try:
        return doc.format_map(rule) if "{" in doc else doc
    except (KeyError, IndexError, ValueError, AttributeError):
        return doc


def _rule_of(item: pytest.Item) -> tuple[str, int]:
    mark = item.get_closest_marker("rule")
    if mark is None:
        return item.name.removeprefix("test_"), 0
    return mark.args[0], int(mark.kwargs.get("points", 0))


def run_checks(facts: Any, rubric: dict, extra_dirs: list[Path] | None = None) -> list[CheckResult]:
    """Run every check (the package's and a course's ``extra_dirs``); results in rubric order."""
    plugin = _Plugin(facts, rubric)
    dirs = [*rubric.get("course", {}).get("check_dirs", []), *(extra_dirs or [])]
    paths = [str(checks_dir()), *dict.fromkeys(str(p) for p in dirs)]
    args = [
        *paths,
        "-p",
        "no:cacheprovider",
        "-p",
        "no:terminal",
        "-p",
        "no:warnings",
        "-p",
        "no:timeout",
        # Plugins a check run never uses, each a cost per grading (unraisableexception alone runs
        # gc.collect() twice at exit: a quarter of a second), and no third-party plugin loads at all.
        *(x for name in UNUSED_PLUGINS for x in ("-p", f"no:{name}")),
        "--disable-plugin-autoload",
        "--import-mode=importlib",
        "--continue-on-collection-errors",
        "-c",
        os.devnull,
        "--rootdir",
        paths[0],
        "-o",
        "markers=rule: ties a check to a rubric rule",
    ]
    code = pytest.main(args, plugins=[plugin])
    if code not in (0, 1) and not plugin._results:
        raise RuntimeError(f"the checks could not run (pytest exit {code})")
    order = {rule_id: i for i, rule_id in enumerate(rubric["rules"])}
    return sorted(plugin._results, key=lambda r: order.get(r.id, len(order)))
