"""Shared pieces of the integration tests: graded fixtures, and Gradescope's results format as a checker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # fixtures/, grading.py

from fixtures.submissions import build_mutation
from grading import REPO, run_grade

VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}


def gradescope_problems(data: object) -> list[str]:
    """Every way ``data`` breaks Gradescope's results.json spec (fields and types); [] when valid."""
    problems: list[str] = []
    number = (int, float)
    if not isinstance(data, dict):
        return ["results.json is not an object"]
    if "score" not in data and not all("score" in t for t in data.get("tests", [])):
        problems.append("no top-level score and a test without one")
    for key, kind in (("score", number), ("execution_time", number), ("output", str)):
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            problems.append(f"{key} is {type(data[key]).__name__}")
    for key in ("visibility", "stdout_visibility"):
        if key in data and data[key] not in VISIBILITIES:
            problems.append(f"{key}={data[key]!r}")
    tests = data.get("tests", [])
    if not isinstance(tests, list):
        return [*problems, "tests is not a list"]
    for i, test in enumerate(tests):
        where = f"tests[{i}]"
        if not isinstance(test, dict):
            problems.append(f"{where} is not an object")
            continue
        for key, kind in (("score", number), ("max_score", number), ("name", str), ("output", str), ("number", str)):
            if key in test and not isinstance(test[key], kind):
                problems.append(f"{where}.{key} is {type(test[key]).__name__}")
        if "status" in test and test["status"] not in ("passed", "failed"):
            problems.append(f"{where}.status={test['status']!r}")
        if test.get("visibility", "visible") not in VISIBILITIES:
            problems.append(f"{where}.visibility={test['visibility']!r}")
        if not all(isinstance(t, str) for t in test.get("tags", [])):
            problems.append(f"{where}.tags holds a non-string")
    for i, row in enumerate(data.get("leaderboard", [])):
        if not isinstance(row.get("name"), str) or not isinstance(row.get("value"), (int, float, str)):
            problems.append(f"leaderboard[{i}] needs a name and a value")
        if row.get("order", "desc") not in ("asc", "desc"):
            problems.append(f"leaderboard[{i}].order={row['order']!r}")
    return problems


@pytest.fixture(scope="session")
def reference_markdown(tmp_path_factory):
    out = tmp_path_factory.mktemp("md") / "out"
    return run_grade(REPO / "reference_solution", out, "--no-train", "--format", "markdown")


@pytest.fixture(scope="session")
def failing_submission(tmp_path_factory) -> Path:
    """The base fixture with a max pool: no_maxpool fails, the rest passes."""
    return build_mutation("maxpool_alias", tmp_path_factory.mktemp("fail") / "sub")


@pytest.fixture(scope="session")
def crashing_submission(tmp_path_factory) -> Path:
    """A model file that raises as soon as it is imported."""
    sub = tmp_path_factory.mktemp("crash") / "sub"
    sub.mkdir()
    (sub / "model.py").write_text(
        "import torch.nn as nn\nraise RuntimeError('boom at import')\n\nclass Net(nn.Module):\n    pass\n"
    )
    return sub
