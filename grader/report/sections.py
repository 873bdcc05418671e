"""Optional report sections (training, the submission's own evidence), rendered from their templates.

Trusted side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grader.report.html import environment

if TYPE_CHECKING:
    from jinja2 import Environment


def extra_sections(results: dict) -> tuple[str, str]:
    """(training_html, evidence_html) for report.html.j2; empty when the run has no such facts."""
    env = environment()
    facts = results.get("facts", {})
    training_html = ""
    if facts.get("training") and _exists(env, "_training.html.j2"):
        training_html = env.get_template("_training.html.j2").render(r=results, f=facts, t=facts["training"])
    evidence_html = ""
    if facts.get("evidence") and _exists(env, "_evidence.html.j2"):
        evidence_html = env.get_template("_evidence.html.j2").render(r=results, f=facts, e=facts["evidence"])
    return training_html, evidence_html


def _exists(env: Environment, name: str) -> bool:
    try:
        env.get_template(name)
        return True
    except Exception:
        return False
