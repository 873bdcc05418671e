"""Code that runs INSIDE a sandboxed child, next to the submission's untrusted code.

Untrusted side (runs inside the sandbox next to the student's code).

Nothing here is trusted by the grader: the child's outputs are inert files (``grader/boundary.py``)
that the trusted side reads by value and checks again. ``enter`` restricts the process with Landlock
before anything else runs; ``probe`` imports, builds and traces the model and builds the transforms;
``train`` trains the model with the grader's recipe on the train split; ``runtime`` makes a student's
module importable (stubs, fake datasets); ``graph_export`` writes the traced graph as JSON.
"""

from __future__ import annotations

import sys

CHILDREN = {"probe": "grader.child.probe", "train": "grader.child.train"}


def main() -> None:
    """``python -c BOOT probe|train SPEC``: the children's entry (see grader/sandbox/launch.py)."""
    import importlib

    from grader.child.probe import run_as_child

    kind, spec = sys.argv[1], sys.argv[2]
    sys.argv = [sys.argv[0], spec]
    run_as_child(importlib.import_module(CHILDREN[kind]).main)
