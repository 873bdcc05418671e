"""The rules table as GitHub-flavoured Markdown (``grade --format markdown``), e.g. for a job summary.

Trusted side.
"""

from __future__ import annotations

from grader.report.graded import student_view, what_was_graded

STATUS = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "➖ not run", "error": "⚠️ not decided"}


def _cell(text: object) -> str:
    """One table cell: a pipe or a newline would end the cell or the row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def _pts(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def results_markdown(results: dict) -> str:
    """A heading with the score, what was graded, then one row per rule: status, points, reason, hint."""
    results = student_view(results)
    lines = [f"## s6-grader: {_pts(results.get('score', 0))}/{results.get('max_score', 0)}"]
    if results.get("bonus"):
        lines[0] += f" + bonus {_pts(results['bonus'])}"
    lines.append("")
    lines.append(" · ".join(f"**{k}** {_cell(v)}" for k, v in what_was_graded(results)))
    err = results.get("error")
    if err:
        lines += [
            "",
            f"> **could not grade everything**: `{err.get('type', 'error')}`: {_cell(err.get('message', ''))}",
        ]
    lines += ["", "| status | rule | points | reason | hint |", "|---|---|---:|---|---|"]
    for check in results.get("checks", []):
        status = STATUS.get(check["status"], check["status"])
        if check.get("extra") and check["status"] == "failed":
            status = "· bonus not earned"
        points = f"{_pts(check['points'])}/{check['max_points']}" + (" extra" if check.get("extra") else "")
        hint = check.get("hint", "") if check["status"] in ("failed", "error") else ""
        lines.append(
            f"| {status} | {_cell(check.get('title') or check['id'])} | {points} | {_cell(check.get('message', ''))} | {_cell(hint)} |"
        )
    sandbox = ((results.get("facts") or {}).get("sandbox") or {}).get("summary")
    if sandbox:
        lines += ["", f"<sub>sandbox: {_cell(sandbox)}</sub>"]
    return "\n".join(lines) + "\n"
