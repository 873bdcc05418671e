"""``grade init-ci``: a GitHub Actions workflow that grades a student's repo on every push.

Trusted side.

The job grades without training (GitHub's runners have no GPU), appends the rules table to the
run's summary page, uploads the HTML report as an artifact, and fails when a required rule fails.
"""

from __future__ import annotations

from pathlib import Path

from grader import __version__

WORKFLOW_PATH = Path(".github") / "workflows" / "grade.yml"

WORKFLOW = """\
# Written by `grade init-ci` (s6-grader {version}): grades this repository on every push.
# Accuracy is not decided here (no GPU); every other rule of the Session 6 assignment is.
name: grade
on:
  push:
  pull_request:
  workflow_dispatch:
jobs:
  grade:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    steps:
      - name: Check out the repository
        uses: actions/checkout@v4
      - name: Set up Python
        uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install the grader
        run: |
          python -m pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu
          python -m pip install {install}
      - name: Grade (every rule but accuracy)
        id: grade
        env:
          NO_ALBUMENTATIONS_UPDATE: "1"
        run: |
          set +e
          grade {folder} --no-train --format markdown --out grade-out >> "$GITHUB_STEP_SUMMARY"
          echo "status=$?" >> "$GITHUB_OUTPUT"
      - name: Upload the report
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: grade-report
          path: grade-out/report.html
      - name: Fail when a required rule fails
        if: steps.grade.outputs.status != '0'
        run: |
          echo "a required rule failed or the submission could not be graded: see the job summary"
          exit 1
"""


def workflow_text(install: str | None = None, folder: str = ".") -> str:
    """The workflow; ``install`` is what pip installs (default: this grader's version from PyPI)."""
    return WORKFLOW.format(version=__version__, install=install or f'"s6-grader=={__version__}"', folder=folder)


class WorkflowExists(Exception):
    """The repository already has a grade workflow (``--force`` replaces it)."""


def write_workflow(repo: Path, install: str | None = None, folder: str = ".", force: bool = False) -> Path:
    path = repo / WORKFLOW_PATH
    if path.exists() and not force:
        raise WorkflowExists(f"{path} exists (pass --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(workflow_text(install, folder))
    return path
