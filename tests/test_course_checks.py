"""A course adds its own checks: a rule with the rubric's points, a hidden rule, a malformed check file."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

from fixtures.submissions import BASE
from grading import by_id, run_grade

COURSE = Path(__file__).parent / "fixtures" / "course_checks"  # a hidden rule, a malformed file, the rubric
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "course_checks"  # the README's worked example


def test_course_checks_run_with_the_rubrics_points(tmp_path):
    _, results, out = run_grade(BASE, tmp_path / "out", "--no-train", "--rubric", str(COURSE / "rubric.toml"))
    checks = by_id(results)
    assert checks["dropout_layers"]["status"] == "passed" and checks["dropout_layers"]["max_points"] == 20
    assert checks["dropout_layers"]["title"] == "At most three dropout layers"
    assert checks["uses_batchnorm"]["status"] == "passed" and checks["uses_batchnorm"]["visibility"] == "hidden"
    broken = checks["broken"]
    assert broken["status"] == "error" and broken["evidence"]["error_type"] == "check_file_error"
    assert "test_broken.py" in broken["message"] and "SyntaxError" in broken["message"]
    # The assignment's own rules are all still decided.
    assert checks["architecture"]["status"] == "passed" and checks["params"]["status"] == "passed"
    assert results["max_score"] == 700 + 20 + 5
    # The hidden rule is in the TA's results, not in the student's report or terminal.
    report = (tmp_path / "out" / "report.html").read_text()
    assert "At most three dropout layers" in report
    assert "batch normalisation" not in report and "uses_batchnorm" not in out


def test_a_course_check_can_fail_with_its_hint(tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(BASE, sub)
    model = (
        (sub / "model.py")
        .read_text()
        .replace("nn.BatchNorm2d(16), nn.ReLU(),", "nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.05),")
    )
    (sub / "model.py").write_text(model)
    _, results, _ = run_grade(sub, tmp_path / "out", "--no-train", "--checks", str(EXAMPLE))
    check = by_id(results)["dropout_layers"]
    assert check["status"] == "passed", check  # two dropout layers: within the limit
    model = model.replace("nn.BatchNorm2d(32), nn.ReLU(),", "nn.BatchNorm2d(32), nn.ReLU(), nn.Dropout(0.05),")
    (sub / "model.py").write_text(model)
    _, results, _ = run_grade(sub, tmp_path / "out2", "--no-train", "--checks", str(EXAMPLE))
    check = by_id(results)["dropout_layers"]
    assert check["status"] == "failed" and "4 dropout layers" in check["message"] and check["hint"]
    assert check["max_points"] == 10  # without a rubric entry: the marker's suggestion


def test_a_rubric_naming_an_unknown_rule_is_a_usage_error(tmp_path):
    rubric = tmp_path / "r.toml"
    rubric.write_text("[rules.dropout_layer]\npoints = 5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "grader", str(BASE), "--no-train", "--rubric", str(rubric), "--checks", str(EXAMPLE)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "dropout_layer" in proc.stderr and "dropout_layers" in proc.stderr  # the known ones are listed


def test_course_rules_are_columns_of_the_gradebook(tmp_path):
    subs = tmp_path / "subs"
    shutil.copytree(BASE, subs / "alice")
    out = tmp_path / "grades"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader",
            "batch",
            str(subs),
            "--out",
            str(out),
            "--no-train",
            "--jobs",
            "1",
            "--rubric",
            str(COURSE / "rubric.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (out / "grades.csv").is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = list(csv.DictReader((out / "grades.csv").open()))
    header = rows[0].keys()
    assert any("dropout_layers" in h for h in header) and any("uses_batchnorm" in h for h in header), header
