"""s6-grader: the autograder for the Session 6 CIFAR-10 CNN assignment.

In a notebook: ``from grader import grade; results = grade(".")`` (see ``grade.__doc__``).
Shared by both sides: the sandboxed children import this package too, so nothing heavy is imported here.
"""

__version__ = "0.1.0"


def grade(path=".", **options):  # type: ignore[no-untyped-def]
    """Grade a submission from Python or a notebook; see grader.integrations.notebook.grade."""
    from grader.integrations.notebook import grade as run

    return run(path, **options)
