"""Typed failures (grader/failures.py): no hand-built failure dict in grader/, every kind has a hint or a
reason it has none, and a Failure writes exactly the dict the sites wrote before."""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
from pathlib import Path

import pytest

import grader
from grader import checks_runner
from grader.checks_runner import ERROR_HINTS, NO_OWN_HINT, error_hint
from grader.failures import ErrorKind, Failure

GRADER = Path(grader.__file__).parent
FAILURES = GRADER / "failures.py"
RAISERS = ("GraphError", "PrepareError")  # exceptions whose first argument is a kind (read as exc.kind)


def _is_kind_literal(node: ast.AST) -> bool:
    """A kind written by hand: a string constant, or ErrorKind.X / ErrorKind.X.value outside a Failure."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.Attribute) and node.attr == "value":
        node = node.value
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ErrorKind"


def hand_built_failures(source: str) -> list[int]:
    """Lines that build a failure dict by hand: ``{"type": "kind", ...}`` or ``dict(type="kind")``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "type" and _is_kind_literal(value):
                    lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "dict"
            and any(k.arg == "type" and _is_kind_literal(k.value) for k in node.keywords)
        ):
            lines.append(node.lineno)
    return lines


def _grader_sources() -> list[Path]:
    files = sorted(p for p in GRADER.rglob("*.py") if p != FAILURES and "__pycache__" not in p.parts)
    assert len(files) > 20 and GRADER / "facts_from_probe.py" in files  # the walk does see the package
    return files


def test_the_scan_finds_a_hand_built_failure() -> None:
    """The scan below is not vacuous: each way of writing a failure by hand is caught."""
    assert hand_built_failures('e = {"type": "timeout", "message": "m"}') == [1]
    assert hand_built_failures('x = 1\ne = {"message": "m", "type": ErrorKind.CRASH.value}') == [2]
    assert hand_built_failures("e = {'type': ErrorKind.CRASH, 'message': 'm'}") == [1]
    assert hand_built_failures('e = dict(type="crash", message="m")') == [1]
    assert hand_built_failures('e = Failure(ErrorKind.CRASH, "m").to_dict()') == []
    assert hand_built_failures('e = {"type": err["type"], "message": "m"}') == []  # a relay, not a new kind


def test_no_hand_built_failure_dict_in_grader() -> None:
    """Every failure in grader/ is a Failure(ErrorKind.X, ...): no {"type": "...", ...} outside failures.py."""
    found = [
        f"{path.relative_to(GRADER.parent)}:{line}"
        for path in _grader_sources()
        for line in hand_built_failures(path.read_text())
    ]
    assert not found, f"build these with grader.failures.Failure(ErrorKind.X, ...).to_dict(): {found}"


def test_every_kind_raised_by_name_is_an_error_kind() -> None:
    """GraphError("kind", ...) and PrepareError("kind", ...): each kind is listed (ErrorKind(exc.kind) would raise)."""
    raised = set()
    for path in _grader_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RAISERS:
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant), f"{path.name}:{node.lineno}: a kind held in a variable"
                raised.add(first.value)
    assert {"bad_graph", "weights_mismatch", "unzip_failed", "clone_failed"} <= raised
    assert raised <= {k.value for k in ErrorKind}, raised - {k.value for k in ErrorKind}


def test_every_kind_has_a_hint_or_a_reason_it_has_none() -> None:
    """The rule: each ErrorKind is in ERROR_HINTS (its own hint) or NO_OWN_HINT (why not), never both,
    and the reason given is what error_hint does with it."""
    hinted, unhinted, every = set(ERROR_HINTS), set(NO_OWN_HINT), set(ErrorKind)
    assert all(isinstance(k, ErrorKind) for k in hinted | unhinted)
    assert not hinted & unhinted, hinted & unhinted
    assert hinted | unhinted == every, f"no hint and no reason: {sorted(every - hinted - unhinted)}"
    assert all(ERROR_HINTS[k].strip() for k in hinted) and all(NO_OWN_HINT[k].strip() for k in unhinted)
    for kind in hinted:
        assert error_hint(kind.value) == ERROR_HINTS[kind]
    generic_failed = error_hint("anything_failed")
    fallback = error_hint("anything")
    for kind, reason in NO_OWN_HINT.items():
        if reason == checks_runner._GENERIC_FAILED:
            assert error_hint(kind.value) == generic_failed, kind
        elif reason == checks_runner._EARLIER_STAGE:
            assert error_hint(kind.value) == fallback, kind


def test_kinds_are_distinct_strings_written_as_their_value() -> None:
    assert len(ErrorKind.__members__) == len(ErrorKind)  # no two members share a value (an alias)
    assert ErrorKind("timeout") is ErrorKind.TIMEOUT and ErrorKind.UNDECIDED == "error"
    assert f"{ErrorKind.BAD_GRAPH}" == str(ErrorKind.BAD_GRAPH) == "bad_graph"
    assert json.dumps([ErrorKind.CRASH]) == '["crash"]'
    with pytest.raises(ValueError):
        ErrorKind("not_a_kind")


def test_a_failure_round_trips_through_its_dict() -> None:
    plain = Failure(ErrorKind.TIMEOUT, "killed after 60 s (the time limit)")
    assert plain.to_dict() == {"type": "timeout", "message": "killed after 60 s (the time limit)"}
    assert type(plain.to_dict()["type"]) is str
    placed = Failure(ErrorKind.SYNTAX_ERROR, "SyntaxError: x", where="model.py:3", stage="importing the model")
    as_dict = placed.to_dict()
    assert list(as_dict) == ["type", "message", "where", "stage"]
    back = Failure(ErrorKind(as_dict["type"]), as_dict["message"], where=as_dict["where"], stage=as_dict["stage"])
    assert back == placed and json.loads(json.dumps(as_dict)) == as_dict
    assert list(Failure(ErrorKind.BAD_GRAPH, "m", where="").to_dict()) == ["type", "message", "where"]
    assert list(Failure(ErrorKind.GRADER_ERROR, "m", trace="t").to_dict()) == ["type", "message", "trace"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.message = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Failure("timeout", "a kind must be an ErrorKind")  # type: ignore[arg-type]


def test_the_sites_write_the_dicts_they_always_wrote() -> None:
    """Two sites by value: the child's typed_error and a sandboxed child's failure."""
    from grader.child.probe import typed_error
    from grader.sandbox import ChildResult

    err = typed_error(ValueError("bad width"), Path("/nowhere"), "building the model")
    assert err == {
        "type": "model_build_failed",
        "message": "ValueError: bad width",
        "where": "",
        "stage": "building the model",
    }
    assert list(err) == ["type", "message", "where", "stage"] and type(err["type"]) is str
    child = ChildResult(returncode=1, timed_out=False, wall_s=1.0, stdout="", stderr="boom", isolation="plain")
    assert child.failure() == {"type": "crash", "message": "the child exited with status 1: boom"}


def test_failures_imports_only_the_standard_library() -> None:
    """The sandboxed children import it too, next to the student's code."""
    tree = ast.parse(FAILURES.read_text())
    assert "both sides" in (ast.get_docstring(tree) or "")
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
