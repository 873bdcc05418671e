"""s6-grader: the autograder for the Session 6 CIFAR-10 CNN assignment.

In a notebook: ``from grader import grade; results = grade(".")`` (see ``grade.__doc__``).
Shared by both sides: the sandboxed children import this package too, so nothing heavy is imported here.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    import os
    from typing import Any

__version__ = "0.1.0"


def grade(path: str | os.PathLike = ".", **options: Any) -> dict:
    """Grade a submission from Python or a notebook; see grader.integrations.notebook.grade."""
    from grader.integrations.notebook import grade as run

    return run(path, **options)
