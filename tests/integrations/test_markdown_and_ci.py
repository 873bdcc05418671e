"""``grade --format markdown`` (a GitHub job summary) and ``grade init-ci`` (the workflow that prints it)."""

from __future__ import annotations

import subprocess
import sys

import yaml
from markdown_it import MarkdownIt

from grader.integrations.github import workflow_text


def table_rows(markdown: str) -> list[list[str]]:
    """The rendered table's rows as lists of cell texts, by a CommonMark parser with GFM tables."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    rows, row, in_cell = [], None, False
    for token in tokens:
        if token.type == "tr_open":
            row = []
        elif token.type in ("td_open", "th_open"):
            in_cell = True
            row.append("")
        elif token.type in ("td_close", "th_close"):
            in_cell = False
        elif token.type == "inline" and in_cell:
            row[-1] += token.content
        elif token.type == "tr_close":
            rows.append(row)
    return rows


def test_the_markdown_renders_to_one_table_row_per_rule(reference_markdown):
    code, results, out = reference_markdown
    assert code == 0, out[-1500:]
    assert out.startswith("## s6-grader: 600/700"), out[:300]
    rows = table_rows(out)
    assert rows[0] == ["status", "rule", "points", "reason", "hint"]
    assert len(rows) == 1 + len(results["checks"])
    assert all(len(r) == 5 for r in rows)
    by_rule = {r[1]: r for r in rows[1:]}
    # A title holding pipes stays one cell (escaped), and the points read as in the report.
    arch = next(r for t, r in by_rule.items() if t.startswith("C1|C2|C3|C4|O"))
    assert arch[0].endswith("passed") and arch[2] == "30/30"
    accuracy = next(r for r in rows[1:] if r[1].startswith("At least 85%"))
    assert "not run" in accuracy[0] and accuracy[2] == "0/100"


def test_a_failed_rule_carries_its_hint(failing_submission, tmp_path):
    from grading import run_grade

    code, _, out = run_grade(failing_submission, tmp_path / "out", "--no-train", "--format", "markdown")
    assert code == 1
    row = next(r for r in table_rows(out)[1:] if r[1].startswith("No max pooling"))
    assert "failed" in row[0] and row[3] and row[4], row


def test_the_workflow_parses_and_names_its_steps():
    workflow = yaml.safe_load(workflow_text(install="s6-grader==0.1.0"))
    assert set(workflow[True] if True in workflow else workflow["on"]) >= {"push", "pull_request"}
    steps = workflow["jobs"]["grade"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "grade-out/report.html" and upload["if"] == "always()"
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "pip install s6-grader==0.1.0" in runs
    assert 'grade . --no-train --format markdown --out grade-out >> "$GITHUB_STEP_SUMMARY"' in runs
    gate = steps[-1]
    assert gate["if"] == "steps.grade.outputs.status != '0'" and "exit 1" in gate["run"]


def test_init_ci_writes_the_workflow_once(tmp_path):
    def init(*args):
        return subprocess.run(
            [sys.executable, "-m", "grader", "init-ci", str(tmp_path), *args], capture_output=True, text=True
        )

    first = init("--folder", "S6")
    assert first.returncode == 0, first.stderr
    written = tmp_path / ".github" / "workflows" / "grade.yml"
    assert "grade S6 --no-train" in written.read_text()
    again = init()
    assert again.returncode == 2 and "--force" in again.stderr
    assert init("--force").returncode == 0 and "grade . --no-train" in written.read_text()
