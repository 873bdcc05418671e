"""A class graded together: no student's code reads another's folder; a batch run from a project checkout works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fixtures.submissions import BASE
from grading import REPO
from layers import require

_PEEK = """
import os
_OTHER = {other!r}
try:
    _SEEN = os.listdir(_OTHER)
except OSError:
    _SEEN = None
if _SEEN is not None:
    raise RuntimeError(f"another student's folder is readable: {{_SEEN}}")
"""


def _batch(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader", "batch", *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env
    )


def test_other_students_folders_are_unreadable(tmp_path, layer):
    subs = tmp_path / "subs"
    shutil.copytree(BASE, subs / "alice")
    shutil.copytree(BASE, subs / "bob")
    model = subs / "alice" / "model.py"
    model.write_text(_PEEK.format(other=str(subs / "bob")) + model.read_text())
    out = tmp_path / "grades"
    proc = _batch(str(subs), "--out", str(out), "--no-train", "--jobs", "1", "--ahead", "1", "--isolation", layer)
    alice = json.loads((out / "alice" / "results.json").read_text())
    assert alice["error"] is None, (alice["error"], proc.stderr[-1500:])
    assert alice["facts"]["sandbox"]["isolation"] == layer


def test_a_batch_started_inside_another_copy_of_the_project_grades_everyone(tmp_path):
    """The parent imports the copy in its working folder; every child must get that very copy."""
    require("bubblewrap")
    project = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "grader", project / "grader", ignore=ignore)
    shutil.copytree(REPO / "checks", project / "grader" / "checks", ignore=ignore)
    shutil.copytree(REPO / "templates", project / "grader" / "templates", ignore=ignore)
    subs = tmp_path / "subs"
    shutil.copytree(BASE, subs / "alice")
    shutil.copytree(BASE, subs / "bob")
    out = tmp_path / "grades"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = _batch(str(subs), "--out", str(out), "--no-train", "--jobs", "2", cwd=project, env=env)
    for student in ("alice", "bob"):
        results = json.loads((out / student / "results.json").read_text())
        assert results["error"] is None, (student, results["error"], proc.stderr[-1500:])
