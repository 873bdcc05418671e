"""What `grade` says to bad input: one line, the right exit status, what it found instead."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fixtures.submissions import BASE, build


def grade(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_bare_grade_shows_help_with_batch_in_the_usage():
    proc = grade()
    assert proc.returncode == 0
    assert "grade batch INPUT" in proc.stdout.splitlines()[1] and "--no-train" in proc.stdout


def test_version():
    proc = grade("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("s6-grader ")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "holds no Python file or notebook"),
        (lambda tmp: _readme_only(tmp), "holds no Python file or notebook"),
        (lambda tmp: _file(tmp, "notes.txt"), "is a file: give a folder, a .zip or a .ipynb"),
    ],
)
def test_input_that_cannot_be_graded_is_one_line_and_exit_2(tmp_path, make, says):
    proc = grade(str(make(tmp_path)), "--no-train", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # no usage dump, no table


def test_a_wrong_model_is_exit_2_and_lists_the_candidates(tmp_path):
    proc = grade(str(BASE), "--no-train", "--model", "model.py:Nett", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "model.py:Net" in proc.stderr and "Nett" in proc.stderr


def test_a_folder_without_a_model_is_exit_2(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "utils.py").write_text("def helper():\n    return 1\n")
    proc = grade(str(sub), "--no-train", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "no nn.Module subclass" in proc.stderr and "utils.py" in proc.stderr


def test_a_zip_is_graded_as_batch_grades_it(tmp_path):
    archive = tmp_path / "alice.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in BASE.rglob("*"):
            if path.is_file():
                z.write(path, f"alice-main/{path.relative_to(BASE)}")
    proc = grade(str(archive), "--no-train", "--out", str(tmp_path / "out"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert proc.returncode == 0, proc.stdout[-1500:]
    assert results["submission"]["name"] == "alice.zip" and results["error"] is None


def test_a_single_notebook_is_graded(tmp_path):
    sub = build("notebook_only", tmp_path / "nb")
    notebook = next(sub.glob("*.ipynb"))
    proc = grade(str(notebook), "--no-train", "--out", str(tmp_path / "out"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["error"] is None, (results["error"], proc.stdout[-1500:])
    assert results["submission"]["name"] == notebook.name
    assert {c["id"]: c["status"] for c in results["checks"]}["architecture"] == "passed"


def test_a_misspelt_rubric_key_is_named_with_the_known_ones(tmp_path):
    rubric = tmp_path / "r.toml"
    rubric.write_text("[rules.params]\npoint = 5\n")
    proc = grade(str(BASE), "--no-train", "--rubric", str(rubric))
    assert proc.returncode == 2 and "'point'" in proc.stderr and "points" in proc.stderr
    rubric.write_text("[rule.params]\npoints = 5\n")
    proc = grade(str(BASE), "--no-train", "--rubric", str(rubric))
    assert proc.returncode == 2 and "[rule]" in proc.stderr


def _readme_only(tmp: Path) -> Path:
    (tmp / "r").mkdir()
    (tmp / "r" / "README.md").write_text("# Session 6\n")
    return tmp / "r"


def _file(tmp: Path, name: str) -> Path:
    (tmp / name).write_text("x")
    return tmp / name


def test_grade_dot_writes_its_report_outside_the_repository(tmp_path):
    import os
    import shutil

    sub = tmp_path / "repo"
    shutil.copytree(BASE, sub)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("S6_GRADER_DATA", None)
    proc = subprocess.run(
        [sys.executable, "-m", "grader", ".", "--no-train"],
        capture_output=True,
        text=True,
        cwd=sub,
        env=env,
        timeout=300,
    )
    assert not (sub / "grade-out").exists()
    report = tmp_path / "cache" / "s6-grader" / "reports" / "repo" / "report.html"
    assert report.is_file(), proc.stdout[-1000:] + proc.stderr[-1000:]
    assert str(report) in proc.stdout.replace("\n", "")
