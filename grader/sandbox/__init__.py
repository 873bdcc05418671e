"""The trusted side's launchers of untrusted code: what a child sees (``view``), the filesystem layers
(``layers``: bubblewrap, Landlock, plain), the limits (``limits``) and the launch itself (``launch``).
What a child hands back is read by ``grader/boundary.py``.
"""

from grader.sandbox.launch import ChildResult, child_command, choose_layer, run_sandboxed
from grader.sandbox.layers import best_layer, bubblewrap_works, bwrap_binary, landlock_abi
from grader.sandbox.limits import Limits, drop_to_nobody
from grader.sandbox.view import ChildView, child_view

__all__ = [
    "ChildResult",
    "ChildView",
    "Limits",
    "best_layer",
    "bubblewrap_works",
    "bwrap_binary",
    "child_command",
    "child_view",
    "choose_layer",
    "drop_to_nobody",
    "landlock_abi",
    "run_sandboxed",
]
