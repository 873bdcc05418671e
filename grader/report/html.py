"""The self-contained HTML report (Jinja, autoescaped; images are inlined as base64).

Trusted side.
"""

from __future__ import annotations

from importlib import resources

import jinja2

from grader.augment_inspect import flatten
from grader.training.source import from_checkpoint


def environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(resources.files("grader.templates")))
    env = jinja2.Environment(
        loader=loader, autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined
    )
    env.globals["leaves"] = flatten
    env.globals["from_checkpoint"] = from_checkpoint
    env.filters["num"] = _num
    return env


def _num(value: object) -> str:
    """125000.0 -> '125,000'; 86.08 -> '86.08'; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def render_report(results: dict, training_html: str = "", evidence_html: str = "") -> str:
    template = environment().get_template("report.html.j2")
    from grader.report.graded import student_view, what_was_graded

    results = student_view(results)
    # Failures first: what a student must fix is at the top; the rubric's order within each status.
    rank = {"failed": 0, "error": 1, "passed": 2, "skipped": 3}
    results = results | {"checks": sorted(results.get("checks") or [], key=lambda c: rank.get(c.get("status"), 4))}
    return template.render(
        r=results,
        f=results.get("facts", {}),
        graded=what_was_graded(results),
        training_html=training_html,
        evidence_html=evidence_html,
    )
