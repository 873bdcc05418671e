"""The self-contained HTML report (Jinja, autoescaped; images are inlined as base64).

Trusted side.
"""

from __future__ import annotations

import functools
from collections import Counter
from importlib import resources

import jinja2

from grader.augment_inspect import flatten
from grader.training.consistency import SHIFT, TRAIN_SAMPLE
from grader.training.source import from_checkpoint

# The roles the grader initialises a parameter as (grader/training/initialise.py), in the order the report lists them.
ROLE_ORDER = (
    "conv weight",
    "conv bias",
    "linear weight",
    "linear bias",
    "norm weight",
    "norm bias",
    "prelu weight",
    "other weight",
    "other scale",
    "other offset",
)


# report.html and its optional sections (grader.report.sections): what every grading renders.
REPORT_TEMPLATES = ("report.html.j2", "_training.html.j2", "_evidence.html.j2")


@functools.cache
def environment() -> jinja2.Environment:
    """The report's one Jinja environment per process: its templates compile once (the batch's fork
    server compiles them before it forks the gradings, grader/batch/warm.py)."""
    loader = jinja2.FileSystemLoader(str(resources.files("grader.templates")))
    env = jinja2.Environment(
        loader=loader, autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined
    )
    env.globals["leaves"] = flatten
    env.globals["from_checkpoint"] = from_checkpoint
    env.globals["consistency_shift"] = SHIFT
    env.globals["consistency_train_sample"] = TRAIN_SAMPLE
    env.filters["num"] = _num
    env.filters["role_counts"] = role_counts
    return env


def compile_templates() -> None:
    """Compile the report's templates now, into the one environment (the batch's fork server does this
    before it forks the gradings)."""
    for name in REPORT_TEMPLATES:
        environment().get_template(name)


def _num(value: object) -> str:
    """125000.0 -> '125,000'; 86.08 -> '86.08'; anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def role_counts(initialised: object) -> str:
    """{tensor: role} -> '17 conv weights, 1 linear weight, 17 norm weights, 17 norm biases' ('' for anything else)."""
    if not isinstance(initialised, dict):
        return ""
    counts = Counter(str(role) for role in initialised.values())
    rank = {role: i for i, role in enumerate(ROLE_ORDER)}
    order = sorted(counts, key=lambda role: (rank.get(role, len(ROLE_ORDER)), role))
    return ", ".join(f"{counts[role]} {_plural(role, counts[role])}" for role in order)


def _plural(role: str, count: int) -> str:
    if count == 1:
        return role
    return role + ("es" if role.endswith(("s", "x", "sh", "ch")) else "s")


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
