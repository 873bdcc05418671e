"""The terminal summary: one line per rule with a mark, the points and the reason.

Trusted side.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from grader.report.graded import student_view, what_was_graded

MARKS = {"passed": ("✓", "green"), "failed": ("✗", "red"), "skipped": ("-", "yellow"), "error": ("!", "magenta")}


def print_summary(results: dict, console: Console | None = None, files: list[str] | None = None) -> None:
    console = console or Console()
    results = student_view(results)
    sub = results.get("submission", {})
    console.print(f"[bold]s6-grader[/bold] {results.get('grader_version', '')}  {sub.get('path', '')}")
    rows = what_was_graded(results)
    console.print(
        "graded: " + rows[0][1] + "  " + "  ".join(f"[dim]{k}[/dim] {v}" for k, v in rows[1:]), highlight=False
    )
    err = results.get("error")
    if err and not results.get("checks"):
        console.print(f"[red]could not grade[/red]: {err['type']}: {err['message']}")
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", width=1)
    table.add_column("rule")
    table.add_column("points", justify="right")
    table.add_column("why", overflow="fold")
    shown_error = False
    for check in results.get("checks", []):
        mark, colour = MARKS.get(check["status"], ("?", "white"))
        if check.get("extra") and check["status"] == "failed":
            mark, colour = "·", "dim"
        points = f"{_pts(check['points'])}/{check['max_points']}" + (" extra" if check.get("extra") else "")
        why = check["message"]
        if check["status"] == "error" and why.startswith("the model could not be analysed"):
            # One typed reason, said once: the rules after it only point back to it.
            why = why if not shown_error else "model not analysed (see above)"
            shown_error = True
        if check["status"] == "failed" and check.get("hint"):
            why += f"\n[dim]hint: {check['hint']}[/dim]"
        for warning in check.get("warnings", []):
            why += f"\n[yellow]note: {warning}[/yellow]"
        table.add_row(Text(mark, style=colour), check["id"], points, why)
    console.print(table)
    console.print(
        "[dim]✓ passed  ✗ failed  ! not decided: the submission broke first  - not run  · bonus not earned[/dim]"
    )
    todo = sorted(
        (c for c in results.get("checks", []) if c["status"] in ("failed", "error") and not c.get("extra")),
        key=lambda c: -(c["max_points"] - c["points"]),
    )
    if todo:
        console.print(
            "[bold]fix these first[/bold]: "
            + ", ".join(f"{c['id']} ({_pts(c['max_points'] - c['points'])} points)" for c in todo[:4])
        )
    pending = sum(c["max_points"] for c in results.get("checks", []) if c["status"] == "skipped" and not c.get("extra"))
    score = f"[bold]score {_pts(results['score'])}/{results['max_score']}[/bold]"
    if results.get("bonus"):
        score += f" + bonus {_pts(results['bonus'])}"
    if pending:
        score += f"  ({pending} points not decided in this run)"
    console.print(score)
    if err:
        console.print(
            f"[magenta]submission error[/magenta]: {err['type']}: {err['message']}"
            + (f" ({err['where']})" if err.get("where") else "")
        )
    sandbox = (results.get("facts") or {}).get("sandbox") or {}
    if sandbox.get("summary"):
        console.print(f"[dim]sandbox: {sandbox['summary']}[/dim]")
    for warning in results.get("warnings", [])[:8]:
        console.print(f"[yellow]warning[/yellow]: {warning}")
    for f in files or []:
        console.print(f"wrote {f}")


def _pts(value: float) -> str:
    """Points as a person writes them: 350, not 350.0; 12.5 stays."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
