"""The Gradescope autograder: the zip is built, unpacked into an autograder root, and its
run_autograder grades fixture submissions into results files that follow Gradescope's spec."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, gradescope_problems

from grader.integrations import gradescope


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    """The zip built from this checkout with a course rubric, unpacked as Gradescope does (into source/)."""
    tmp = tmp_path_factory.mktemp("gs")
    rubric = tmp / "course.toml"
    rubric.write_text('[rules.bonus]\nvisibility = "hidden"\n')
    zip_path = tmp / "autograder.zip"
    proc = subprocess.run(
        [sys.executable, "-m", "grader", "gradescope", "build", "--out", str(zip_path), "--rubric", str(rubric)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert {"setup.sh", "run_autograder", "rubric.toml"} <= set(names)
        assert any(n.startswith("wheels/s6_grader-") and n.endswith(".whl") for n in names)
        assert zf.getinfo("run_autograder").external_attr >> 16 & 0o111  # executable
        zf.extractall(tmp / "source")
    for script in ("setup.sh", "run_autograder"):
        assert subprocess.run(["bash", "-n", str(tmp / "source" / script)]).returncode == 0
    return tmp / "source"


def run_autograder(source: Path, root: Path, submission: Path | None, python: str = sys.executable) -> dict:
    shutil.copytree(source, root / "source")
    if submission is not None:
        shutil.copytree(submission, root / "submission")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "S6_GRADER_PYTHON": python}
    proc = subprocess.run(
        ["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads((root / "results" / "results.json").read_text())
    assert gradescope_problems(data) == []
    return data


def test_the_reference_gets_every_point_but_accuracy(autograder, tmp_path):
    data = run_autograder(autograder, tmp_path / "ag", REPO / "reference_solution")
    tests = {t["tags"][0]: t for t in data["tests"]}
    assert data["score"] == 600
    assert tests["accuracy"]["score"] == 0 and "status" not in tests["accuracy"]
    assert tests["accuracy"]["output"].startswith("not decided here")
    assert all(
        t["status"] == "passed" and t["score"] == t["max_score"]
        for k, t in tests.items()
        if k not in ("accuracy", "bonus")
    )
    assert tests["architecture"]["name"].startswith("C1|C2|C3|C4|O")
    assert tests["bonus"]["max_score"] == 0 and tests["bonus"]["visibility"] == "after_published"  # the zip's rubric
    board = {row["name"]: row["value"] for row in data["leaderboard"]}
    assert board["Parameters"] == 195_794 and board["Receptive field"] == 83
    assert "accuracy" in data["output"] and "sandbox:" in data["output"]


def test_a_failing_submission_fails_its_rule_with_a_hint(autograder, tmp_path, failing_submission):
    data = run_autograder(autograder, tmp_path / "ag", failing_submission)
    tests = {t["tags"][0]: t for t in data["tests"]}
    assert tests["no_maxpool"]["status"] == "failed" and tests["no_maxpool"]["score"] == 0
    assert "hint:" in tests["no_maxpool"]["output"]
    assert tests["params"]["status"] == "passed"


def test_a_crashing_submission_still_yields_a_valid_file(autograder, tmp_path, crashing_submission):
    data = run_autograder(autograder, tmp_path / "ag", crashing_submission)
    assert data["score"] == 0 or all(t["score"] == 0 for t in data["tests"] if t["tags"][0] != "readme")
    assert "boom at import" in json.dumps(data)


def test_no_submission_or_no_grader_still_yields_a_valid_file(autograder, tmp_path):
    data = run_autograder(autograder, tmp_path / "empty", None)
    assert data["score"] == 0 and "could not grade" in data["output"]
    broken = run_autograder(autograder, tmp_path / "broken", REPO / "reference_solution", python="/bin/false")
    assert broken["score"] == 0 and "not installed" in broken["output"]


def test_a_checkpoint_in_the_submission_is_evaluated_instead_of_skipped(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.safetensors").write_bytes(b"xx")
    assert gradescope.find_checkpoint(tmp_path) == tmp_path / "sub" / "model.safetensors"
    assert gradescope.find_checkpoint(tmp_path / "sub" / "none") is None


def test_a_hidden_rule_is_published_later_and_extra_points_are_extra():
    results = {
        "score": 10,
        "bonus": 5,
        "max_score": 20,
        "facts": {},
        "checks": [
            {
                "id": "a",
                "title": "A",
                "status": "passed",
                "points": 10,
                "max_points": 20,
                "message": "ok",
                "visibility": "hidden",
            },
            {"id": "b", "title": "B", "status": "passed", "points": 5, "max_points": 5, "message": "ok", "extra": True},
        ],
    }
    data = gradescope.to_gradescope(results, 1.0)
    assert gradescope_problems(data) == []
    assert data["score"] == 15
    assert [t["visibility"] for t in data["tests"]] == ["after_published", "visible"]
    assert data["tests"][1]["max_score"] == 0
