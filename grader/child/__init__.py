"""Code that runs INSIDE a sandboxed child, next to the submission's untrusted code.

Untrusted side (runs inside the sandbox next to the student's code).

Nothing here is trusted by the grader: the child's outputs are inert files (``grader/boundary.py``)
that the trusted side reads by value and checks again. ``enter`` restricts the process (Landlock, no
capabilities, the seccomp filter of ``seccomp``)
before anything else runs; ``probe`` imports, builds and exports the model (in eval and in train mode)
and serialises the transforms; ``runtime`` makes a student's module importable (stubs, fake datasets);
``graph_export`` writes the exported graphs as JSON. This is the only place student code runs: the
grader trains and evaluates the exported graph on the trusted side.
"""

from __future__ import annotations

import os
import sys
import time

CHILDREN = {"probe": "grader.child.probe"}


def main() -> None:
    """``python -c BOOT probe SPEC``: the children's entry (see grader/sandbox/launch.py)."""
    import importlib

    from grader.child.probe import run_as_child

    kind, spec = sys.argv[1], sys.argv[2]
    child = importlib.import_module(CHILDREN[kind])
    if spec == "-":  # a warm child: its libraries first, then the spec's path from the launcher
        child.preload()
        waiting = time.perf_counter()
        spec = sys.stdin.readline().strip()
        child.WARM["waited"] = time.perf_counter() - waiting
        if not spec:
            os._exit(0)  # not needed after all (the submission could not be read)
    sys.argv = [sys.argv[0], spec]
    run_as_child(child.main)
