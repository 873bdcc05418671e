"""Preloaded once into the batch's fork server, so that each grading process starts with them imported.

Trusted side.

Every grading still gets a fresh process of its own (forked from the server, which has run nothing of any
submission); what it skips is importing torch and the grader again (about 2-3 CPU seconds each, the
largest cost of a no-train grading after the sandboxed probe, which always starts clean).
"""

from __future__ import annotations

import contextlib
import importlib

MODULES = (
    "torch",
    "numpy",
    "rich.console",
    "rich.table",
    "pytest",
    "jinja2",
    "grader.cli",
    "grader.pipeline",
    "grader.facts_from_probe",
    "grader.checks_runner",
    "grader.report.html",
    "grader.report.sections",
    "grader.report.terminal",
)


def preload() -> None:
    """Import what every grading imports; a module that fails to import is simply left to the grading."""
    for name in MODULES:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # The report's templates, compiled once here rather than in every grading.
    with contextlib.suppress(Exception):
        from grader.report.html import compile_templates

        compile_templates()
    # The sandbox's one-off probes of this machine (can bubblewrap run? can `nobody` run Python?).
    with contextlib.suppress(Exception):
        from grader.sandbox import bubblewrap_works, drop_to_nobody

        drop_to_nobody()
        bubblewrap_works()


preload()
